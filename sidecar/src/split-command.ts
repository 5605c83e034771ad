/**
 * Splits a command line into argv the way a POSIX shell splits words, and does nothing else:
 * no variable, command or glob expansion, no pipes or redirections. The result is passed to
 * `spawn` with `shell: false`, so nothing in the line is ever interpreted by a shell.
 *
 * - Blanks (space, tab, newline) separate words; `'...'` is literal; inside `"..."` a backslash
 *   escapes `"`, `\`, `$` and `` ` `` only; outside quotes a backslash escapes any character.
 * - Quoted and unquoted parts next to each other form one word (`a"b c"` is `ab c`); `""` is an
 *   empty word.
 * - Unquoted `| & ; < > ( )`, `#` or `~` starting a word, and `$` or `` ` `` outside single
 *   quotes, are refused rather than passed on literally: they mean the user expected a shell
 *   (write `sh -c '...'` for that).
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const ch = line.charAt(i);
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      i++;
      continue;
    }
    // At the start of a word a shell reads `#` as a comment and `~` as the home directory: taken
    // literally, a commented-out flag would be passed to the command, `~/x` would name no file.
    if (!inWord && (ch === '#' || ch === '~')) throw refusedCharacter(ch, i);
    inWord = true;
    if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new SplitCommandError(`unterminated single quote at position ${i + 1}`);
      word += line.slice(i + 1, end);
      i = end + 1;
      continue;
    }
    if (ch === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const c = line.charAt(i);
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        if (c === '\\' && i + 1 < line.length && '"\\$`'.includes(line.charAt(i + 1))) {
          word += line.charAt(i + 1);
          i += 2;
          continue;
        }
        if (c === '$' || c === '`') throw refusedCharacter(c, i);
        word += c;
        i++;
      }
      if (!closed) throw new SplitCommandError('unterminated double quote');
      continue;
    }
    if (ch === '\\') {
      if (i + 1 >= line.length) throw new SplitCommandError('trailing backslash');
      const next = line.charAt(i + 1);
      // Backslash-newline is a line continuation, as in a shell.
      if (next !== '\n') word += next;
      else inWord = word.length > 0;
      i += 2;
      continue;
    }
    if ('|&;<>()$`'.includes(ch)) throw refusedCharacter(ch, i);
    word += ch;
    i++;
  }
  if (inWord) words.push(word);
  return words;
}

export class SplitCommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SplitCommandError';
  }
}

function refusedCharacter(ch: string, index: number): SplitCommandError {
  return new SplitCommandError(
    `"${ch}" at position ${index + 1} needs a shell, and none is run: quote it, or run sh -c '...' explicitly`,
  );
}
