import { TEST_ADMIN_KEY } from './hub';
import { eventually } from './poll';

/**
 * A PUT to Bull Board's API on the hub at `hubUrl` (`/admin/queues/api/queues/<path>`: a retry, a
 * clean), sent again until Bull Board lists the queue: a sweeper tick adds it, 404 until then.
 */
export function bullBoardPut(hubUrl: string, path: string): Promise<Response> {
  return eventually(
    async () => {
      const response = await fetch(`${hubUrl}/admin/queues/api/queues/${path}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
      });
      return response.status === 404 ? undefined : response;
    },
    { what: `Bull Board: ${path}` },
  );
}
