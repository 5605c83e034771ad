import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from './temp-dir';

/** The token in the fixture's `token` file (the file holds it plus a newline). */
export const FIXTURE_TOKEN = 'token-from-file';

/** What a test of the sidecar's config file works with; read it inside tests and hooks only. */
export interface ConfigFileFixture {
  /** The test's temp dir: the config file's directory, holding the owner-only file `token`. */
  readonly dir: string;
  /** `<dir>/sidecar.json`, written by {@link write} only. */
  readonly file: string;
  /** Writes the config file: a string as is, anything else as JSON. */
  write(content: unknown): Promise<void>;
}

/**
 * Registers the jest hooks of tests that read a config file: each test gets a fresh temp dir
 * holding a token file (`"tokenFile": "token"` in the config file) and the config file's path,
 * and the dir is removed after it. Call it in the `describe` whose tests use it.
 */
export function useConfigFileFixture(): ConfigFileFixture {
  let dir: string | undefined;
  let cleanup: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir());
    await writeFile(join(dir, 'token'), `${FIXTURE_TOKEN}\n`, { mode: 0o600 });
  });
  afterEach(async () => {
    await cleanup?.();
    dir = undefined;
  });

  const ready = (): string => {
    if (dir === undefined) throw new Error("the config file fixture's dir is read outside a test");
    return dir;
  };
  const fixture: ConfigFileFixture = {
    get dir() {
      return ready();
    },
    get file() {
      return join(ready(), 'sidecar.json');
    },
    write: (content) =>
      writeFile(fixture.file, typeof content === 'string' ? content : JSON.stringify(content)),
  };
  return fixture;
}
