// pm2 ecosystem file for agentcom-sidecar (pm2 is AGPL-3.0: install it as a tool on the agent's
// machine, `npm install -g pm2`; it is never a dependency of the sidecar).
//
//   pm2 start ecosystem.config.cjs          start (waits for the first hub connection)
//   pm2 save && pm2 startup systemd         start again at boot
//   pm2 stop agentcom-sidecar               SIGINT: the sidecar drains, then exits 0
//
// Configure the sidecar in ~/.config/agentcom/sidecar.json (see the README), or with AGENTCOM_*
// variables exported when running `pm2 start`: they are passed on below.
const DRAIN_GRACE_MS = Number(process.env.AGENTCOM_DRAIN_GRACE_MS || 30000);
const KILL_GRACE_MS = Number(process.env.AGENTCOM_KILL_GRACE_MS || 5000);
// After the task is stopped, the sidecar sends its report (or keeps it in its state file).
const REPORT_FLUSH_MS = 5000;

/** The AGENTCOM_* variables (and LOG_LEVEL) of the shell that runs `pm2 start`. */
const sidecarEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([name, value]) =>
      (name.startsWith('AGENTCOM_') || name === 'LOG_LEVEL') && value !== undefined,
  ),
);

module.exports = {
  apps: [
    {
      name: 'agentcom-sidecar',
      // An absolute path: pm2 resolves a bare name through its daemon's PATH, which may not hold
      // npm's bin directory. Yours is $(npm prefix -g)/bin/agentcom-sidecar.
      script: '/usr/local/bin/agentcom-sidecar',
      args: ['run'],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      // The sidecar sends process.send('ready') once the hub accepted its first handshake.
      wait_ready: true,
      listen_timeout: 15000,
      // pm2 stop sends SIGINT, then SIGKILL after kill_timeout: leave the drain its grace, the
      // task's process group its kill grace, and the report its delivery (as TimeoutStopSec).
      kill_timeout: DRAIN_GRACE_MS + KILL_GRACE_MS + REPORT_FLUSH_MS,
      // Crash loops back off: 500 ms, doubling up to 15 s; a run under min_uptime counts as a crash.
      exp_backoff_restart_delay: 500,
      max_restarts: 16,
      min_uptime: '10s',
      // Exit codes that need a human (README "Signals and exit codes"): 2 bad config, 3 refused
      // by the hub, 4 replaced by another instance: not restarted. Not 0: pm2 records a process
      // killed by a signal (kill -9, the OOM killer) as exit code 0, and that one must restart.
      stop_exit_codes: [2, 3, 4],
      max_memory_restart: '300M',
      time: false, // the sidecar's JSON log lines carry their own time
      env: { NODE_ENV: 'production', ...sidecarEnv },
    },
  ],
};
