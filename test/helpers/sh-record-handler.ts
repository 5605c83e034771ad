import { join } from 'node:path';
import { ROOT } from './processes';

/**
 * `AGENTCOM_EXEC` of test/fixtures/record-handler.sh, the record handler in POSIX sh: for sidecars
 * that run hundreds of tasks, where a node process per task (about 0.1 s of CPU each) would set
 * the pace on a 2-core machine. Same run log, result and payload options (a flat payload).
 */
export const SH_RECORD_HANDLER = `/bin/sh ${join(ROOT, 'test', 'fixtures', 'record-handler.sh')}`;
