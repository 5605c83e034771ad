/** Nothing global to stop: each test file owns and stops its own redis-server and processes. */
export default function globalTeardown(): void {}
