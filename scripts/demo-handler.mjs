#!/usr/bin/env node
// The demo's exec handler: reads the task JSON on stdin, logs a line, "works" for a moment and
// prints its result as the last stdout line (JSON), as every agentcom exec handler does.
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
  const task = JSON.parse(input);
  console.log(`working on ${task.id} (attempt ${process.env.AGENTCOM_ATTEMPT})`);
  const ms = 100 + Math.floor(Math.random() * 400);
  setTimeout(() => {
    const words = String(task.payload?.text ?? '')
      .split(/\s+/)
      .filter(Boolean).length;
    console.log(JSON.stringify({ words, tookMs: ms, handlerPid: process.pid }));
  }, ms);
});
