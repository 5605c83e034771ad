import { SplitCommandError, splitCommand } from './split-command';

describe('splitCommand', () => {
  it.each([
    ['claude -p', ['claude', '-p']],
    ['  spaced\t out \n words ', ['spaced', 'out', 'words']],
    [`run 'a b' "c d"`, ['run', 'a b', 'c d']],
    [`say 'it''s' "x"y'z'`, ['say', 'its', 'xyz']],
    [`echo "" ''`, ['echo', '', '']],
    [
      `echo "quote \\" back \\\\ dollar \\$ tick \\\` other \\n"`,
      ['echo', 'quote " back \\ dollar $ tick ` other \\n'],
    ],
    [
      `echo 'single $HOME | > keeps everything \\'`,
      ['echo', 'single $HOME | > keeps everything \\'],
    ],
    [`path\\ with\\ spaces next`, ['path with spaces', 'next']],
    ['line \\\n continued', ['line', 'continued']],
    ['json {"a":1}', ['json', '{a:1}']],
    [`tag a#b "#c" \\#d '~' x~ "~"`, ['tag', 'a#b', '#c', '#d', '~', 'x~', '~']],
    ['', []],
  ])('splits %j', (line, argv) => {
    expect(splitCommand(line)).toEqual(argv);
  });

  it.each([
    [`echo 'open`, /unterminated single quote/],
    [`echo "open`, /unterminated double quote/],
    ['echo trailing\\', /trailing backslash/],
    ['cat file | grep x', /"\|" at position 10 needs a shell/],
    ['run > out.txt', /">"/],
    ['a && b', /"&"/],
    ['echo $HOME', /"\$"/],
    ['echo "$HOME"', /"\$"/],
    ['echo `id`', /"`"/],
    ['claude -p # --dangerously-skip-permissions', /"#" at position 11 needs a shell/],
    ['claude -p \\\n# --verbose', /"#"/],
    ['node ~/handler.js', /"~" at position 6 needs a shell/],
  ])('refuses %j', (line, message) => {
    expect(() => splitCommand(line)).toThrow(SplitCommandError);
    expect(() => splitCommand(line)).toThrow(message);
  });
});
