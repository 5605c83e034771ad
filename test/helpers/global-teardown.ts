import { writeReliabilityReport } from './reliability';

/** Each test file stops its own processes; at the end the fault scenarios' rows become test/RELIABILITY.md. */
export default function globalTeardown(): void {
  writeReliabilityReport();
}
