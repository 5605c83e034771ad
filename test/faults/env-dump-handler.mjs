#!/usr/bin/env node
// Exec handler of the security scenario. Prints every AGENTCOM_* variable it was given, one line
// each (stdout lines become task logs, so a token handed to the handler would end up in the logs),
// then completes with {taskId, vars: [names]}.
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
  const task = JSON.parse(input);
  const names = Object.keys(process.env)
    .filter((name) => name.startsWith('AGENTCOM_'))
    .sort();
  for (const name of names) console.log(`env ${name}=${process.env[name]}`);
  console.log(JSON.stringify({ taskId: task.id, vars: names }));
});
