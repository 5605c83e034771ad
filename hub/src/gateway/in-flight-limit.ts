/**
 * Bounds how many events of one connection are being handled at once. A sidecar waits for its
 * acks (one log batch in flight, a heartbeat, a report), so it stays far below the bound; an
 * agent that emits without waiting gets its excess refused at once, before any Redis work and
 * without its payloads being held while earlier events run.
 */
export class InFlightLimit {
  private inFlight = 0;

  constructor(readonly max: number) {}

  /** Takes a slot; false when all `max` are taken (the event must be refused). */
  take(): boolean {
    if (this.inFlight >= this.max) return false;
    this.inFlight++;
    return true;
  }

  release(): void {
    this.inFlight--;
  }
}
