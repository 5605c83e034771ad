import { io, type Socket } from 'socket.io-client';
import type {
  UiClientToServerEvents,
  UiServerToClientEvents,
  UiSnapshot,
  UiTransition,
} from '../../hub/src/ui/ui-events';
import { TEST_ADMIN_KEY, eventually } from './hub';
import { withTimeout } from './test-agent';

/** Fetches the agents page with the admin key and returns the UI session embedded in it. */
export async function pageSession(hubUrl: string): Promise<string> {
  const response = await fetch(`${hubUrl}/`, {
    headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
  });
  const html = await response.text();
  const boot = /<script type="application\/json" id="agentcom-boot">(.*?)<\/script>/s.exec(html);
  if (!boot?.[1]) throw new Error('no boot data in the page');
  return (JSON.parse(boot[1]) as { session: string }).session;
}

/**
 * A protocol-level `/ui` client (as the page's script opens it) that records every snapshot
 * and transition it receives.
 */
export class UiClient {
  readonly socket: Socket<UiServerToClientEvents, UiClientToServerEvents>;
  readonly received: UiTransition[] = [];
  readonly snapshots: UiSnapshot[] = [];

  constructor(hubUrl: string, auth: Record<string, unknown>) {
    // forceNew: a cached Manager would be shared with the TestAgents' `/agent` sockets of the
    // same hub, and the gateway's disconnect of a replaced agent would close both.
    this.socket = io(`${hubUrl}/ui`, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      auth,
    });
    this.socket.on('transitions', (events) => this.received.push(...events));
    this.socket.on('snapshot', (snapshot) => this.snapshots.push(snapshot));
  }

  /** Resolves on connect; rejects with the connect_error (its `data` carries the code). */
  connected(): Promise<void> {
    return withTimeout(
      new Promise<void>((resolve, reject) => {
        this.socket.once('connect', () => resolve());
        this.socket.once('connect_error', reject);
      }),
      10_000,
      '/ui connect',
    );
  }

  /** Resolves with the first transition received (already or later) that matches. */
  transition(match: (event: UiTransition) => boolean, what: string): Promise<UiTransition> {
    return eventually(() => this.received.find(match), { timeoutMs: 10_000, what });
  }

  close(): void {
    this.socket.disconnect();
  }
}
