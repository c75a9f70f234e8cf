// Drives the Cloud Tasks door with Google's Node client, @google-cloud/tasks,
// in its REST ("fallback") mode over plain HTTP, as a user points it at
// torque.  Run by tests/test_cloudtasks_node.py:
//   node cloudtasks_node_client.js PORT TOKEN RECEIVER_URL
// It prints one JSON object: what each call answered.
'use strict';

const {CloudTasksClient} = require('@google-cloud/tasks');
const {OAuth2Client} = require('google-auth-library');

async function main() {
  const [port, token, hook] = process.argv.slice(2);
  // A static bearer token: torque's --api-token.
  const auth = new OAuth2Client();
  auth.setCredentials({access_token: token});
  const client = new CloudTasksClient({
    fallback: true,
    apiEndpoint: '127.0.0.1',
    port: Number(port),
    protocol: 'http',
    authClient: auth,
  });
  const parent = client.locationPath('node-proj', 'us-central1');
  const name = `${parent}/queues/node-q`;
  const out = {};
  const code = async (call) => {
    try {
      await call();
      return 0;
    } catch (e) {
      return e.code;
    }
  };

  const [created] = await client.createQueue({
    parent,
    queue: {name, rateLimits: {maxDispatchesPerSecond: 5}, retryConfig: {maxAttempts: 4}},
  });
  out.created = {name: created.name, state: created.state, rate: created.rateLimits.maxDispatchesPerSecond};
  out.duplicateQueue = await code(() => client.createQueue({parent, queue: {name}}));
  await client.createQueue({parent, queue: {name: `${parent}/queues/node-gone`}});
  const [got] = await client.getQueue({name});
  out.got = {attempts: got.retryConfig.maxAttempts};
  const [queues] = await client.listQueues({parent, pageSize: 1});  // autopaginated
  out.queues = queues.map((q) => q.name.split('/').pop());
  const [updated] = await client.updateQueue({
    queue: {name, rateLimits: {maxDispatchesPerSecond: 2}},
    updateMask: {paths: ['rate_limits.max_dispatches_per_second']},
  });
  out.updated = {rate: updated.rateLimits.maxDispatchesPerSecond, attempts: updated.retryConfig.maxAttempts};
  out.paused = (await client.pauseQueue({name}))[0].state;
  out.resumed = (await client.resumeQueue({name}))[0].state;
  out.purged = Boolean((await client.purgeQueue({name}))[0].purgeTime);
  await client.deleteQueue({name: `${parent}/queues/node-gone`});
  out.deletedQueue = await code(() => client.getQueue({name: `${parent}/queues/node-gone`}));

  const later = {seconds: Math.floor(Date.now() / 1000) + 3600};
  for (const id of ['n1', 'n2', 'n3']) {
    await client.createTask({
      parent: name,
      task: {name: `${name}/tasks/${id}`, httpRequest: {url: `${hook}/node/${id}`}, scheduleTime: later},
    });
  }
  const [task] = await client.createTask({
    parent: name,
    task: {
      name: `${name}/tasks/run-me`,
      httpRequest: {
        url: `${hook}/node/run`,
        httpMethod: 'PUT',
        headers: {'Content-Type': 'text/plain'},
        body: Buffer.from('Hello, World!'),
      },
      scheduleTime: later,
      dispatchDeadline: {seconds: 30},
    },
    responseView: 'FULL',
  });
  out.task = {name: task.name, body: Buffer.from(task.httpRequest.body).toString(), view: task.view};
  out.duplicateTask = await code(() =>
    client.createTask({parent: name, task: {name: task.name, httpRequest: {url: hook}}}));
  const [full] = await client.getTask({name: task.name, responseView: 'FULL'});
  out.full = {method: full.httpRequest.httpMethod, deadline: Number(full.dispatchDeadline.seconds)};
  const [tasks] = await client.listTasks({parent: name, pageSize: 1});  // autopaginated
  out.tasks = tasks.map((t) => t.name.split('/').pop()).sort();
  await client.runTask({name: task.name});
  await client.deleteTask({name: `${name}/tasks/n2`});
  out.deletedTask = await code(() => client.getTask({name: `${name}/tasks/n2`}));
  out.missingTask = await code(() => client.getTask({name: `${name}/tasks/nope`}));
  out.oidc = await code(() => client.createTask({
    parent: name,
    task: {httpRequest: {url: hook, oidcToken: {serviceAccountEmail: 'a@b.c'}}},
  }));
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
