#!/usr/bin/env node
// first: V8 flags hold only for what is compiled and allocated after them
import './v8-flags';
import { ConfigError, loadConfig } from './config';
import { startEmbeddedRedis, type EmbeddedRedis } from './embedded-redis';
import { startHub } from './hub';
import { createLogger } from './logger';
import { logUnhandledRejections } from './process-guards';
import { exitDeadlineMs } from './stop-bounds';

/** `agentcom-hub`: one replica. Exit codes: 0 stopped cleanly, 1 failed, 2 bad configuration. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`agentcom-hub: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger({ level: config.logLevel, hubId: config.hubId });
  logUnhandledRejections(logger);
  let embedded: EmbeddedRedis | undefined;
  if (!config.redisUrl) {
    try {
      embedded = await startEmbeddedRedis(config.dataDir, config.embeddedRedisPort);
    } catch (err) {
      process.stderr.write(`agentcom-hub: ${(err as Error).message}\n`);
      process.exit(1);
    }
    logger.info(
      { url: embedded.url, dir: embedded.dir, owned: embedded.owned },
      'REDIS_URL not set: using the embedded redis-server (AOF on)',
    );
    config = { ...config, redisUrl: embedded.url };
  }
  if (config.adminKeyGenerated) {
    process.stderr.write(`agentcom-hub: AGENTCOM_DEV=1, generated admin key: ${config.adminKey}\n`);
  }
  const hub = await startHub(config, logger);

  let signals = 0;
  const shutdown = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    logger.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      logger.error('graceful shutdown timed out');
      process.exit(1);
    }, exitDeadlineMs(config));
    deadline.unref();
    void hub
      .close()
      .then(() => (embedded?.owned ? embedded.stop() : undefined))
      .then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err: String(err) }, 'graceful shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((err: unknown) => {
  process.stderr.write(
    `agentcom-hub: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
