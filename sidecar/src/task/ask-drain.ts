import type { HubConnection } from '../connection/hub-connection';
import type { Logger } from '../logger';
import { errorText } from '../error-text';

/**
 * Asks the hub to drain this agent (`agent:drain`): it pushes no more tasks to this connection,
 * and gives back at once a task it pushed that is not accepted yet. Never throws. The sidecar
 * drains itself whatever the answer (it has stopped taking tasks before asking), so a refusal
 * (`E_UNAVAILABLE` while the hub's Redis is down, `E_RATE_LIMITED`, ...) or a missing answer is
 * only logged: a task the hub pushes all the same is declined by asking again
 * (`TaskController`), which gives it back then. `why` says which ask it is, in the logs.
 */
export async function askHubToDrain(
  connection: Pick<HubConnection, 'request'>,
  logger: Logger,
  why: string,
): Promise<void> {
  try {
    const ack = await connection.request('agent:drain', {});
    if (ack.ok) {
      logger.info({ state: ack.state, why }, 'the hub recorded the drain');
    } else {
      logger.warn(
        { code: ack.code, reason: ack.message, why },
        'the hub refused agent:drain: draining here all the same',
      );
    }
  } catch (err) {
    logger.warn({ err: errorText(err), why }, 'agent:drain not acknowledged');
  }
}
