import { createHash } from 'node:crypto';
import {
  MAX_CURSOR_LENGTH,
  MAX_QUEUE_NAME_LENGTH,
  MAX_TASK_ID_LENGTH,
  listTasksQuerySchema,
} from '@agentcom/shared';
import { DIGESTED_PREFIX_LENGTH, nameOf, type JobName } from './listing-position';
import { decodeCursor, encodeCursor } from './task-listing';

/** The cursor's bound in shared against the hub's own encoding of the widest positions. */
describe('the listing cursor and its bound', () => {
  const queue = 'q'.repeat(MAX_QUEUE_NAME_LENGTH);
  const stay = '999999999999999:999999999999999';
  // ids of the longest a task id can be, of the characters that take most room in a cursor, and
  // longer ones (an outside producer's), named by a digest
  const units = ['\u0001', '\ud800', '"', 'é', 'a'];
  const ids: JobName[] = [
    ...units.map((unit) => unit.repeat(MAX_TASK_ID_LENGTH)),
    ...units.map((unit) => nameOf(unit.repeat(100_000))),
    nameOf('\u{1f600}'.repeat(MAX_TASK_ID_LENGTH)),
  ];

  it('takes back every cursor the hub can answer', () => {
    let widest = 0;
    for (const a of ids) {
      for (const n of ids) {
        for (const type of ['wait', 'active']) {
          const cursor = encodeCursor({ queue, type }, { last: a, stay, next: n, nextStay: stay });
          widest = Math.max(widest, cursor.length);
          expect(listTasksQuerySchema.safeParse({ cursor }).success).toBe(true);
          expect(decodeCursor(cursor)).toEqual({
            q: queue,
            t: type,
            at: { last: a, stay, next: n, nextStay: stay },
          });
        }
      }
      for (const type of ['prioritized', 'delayed', 'completed', 'failed']) {
        for (const score of [-Number.MAX_VALUE, -1 / 3e6, 2 ** 53]) {
          const cursor = encodeCursor({ queue, type }, { last: a, score });
          expect(listTasksQuerySchema.safeParse({ cursor }).success).toBe(true);
        }
      }
    }
    // and no more than that: a made-up cursor stays bounded
    expect(MAX_CURSOR_LENGTH - widest).toBeLessThan(16);
    expect(
      listTasksQuerySchema.safeParse({ cursor: 'x'.repeat(MAX_CURSOR_LENGTH + 1) }).success,
    ).toBe(false);
  });

  it("names a job by its id up to a task id's length, and by a digest of a bounded size beyond", () => {
    const id = 'a'.repeat(MAX_TASK_ID_LENGTH);
    expect(nameOf(id)).toBe(id);
    expect(nameOf(`${id}é`)).toEqual({
      prefix: 'a'.repeat(DIGESTED_PREFIX_LENGTH),
      sha1: createHash('sha1').update(`${id}é`).digest('hex'),
      bytes: MAX_TASK_ID_LENGTH + 2,
    });
    // its prefix is the start of the id's UTF-8 bytes: never half a surrogate pair
    const emoji = '\u{1f600}'.repeat(MAX_TASK_ID_LENGTH);
    const { prefix } = nameOf(`x${emoji}`) as { prefix: string };
    expect(prefix).toBe(`x${emoji.slice(0, DIGESTED_PREFIX_LENGTH - 2)}`);
    expect(Buffer.from(`x${emoji}`).subarray(0, Buffer.byteLength(prefix))).toEqual(
      Buffer.from(prefix),
    );
  });
});
