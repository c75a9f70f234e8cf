// Drives a torque node's QStash door with the official @upstash/qstash
// client, unmodified (tests/test_qstash_node_e2e.py runs it).  Reads its
// inputs from the environment, prints one JSON object of results.
//   PHASE=publish  QSTASH_URL, QSTASH_TOKEN, RECEIVER
//   PHASE=inspect  + IDS (JSON from the publish phase), DELIVERY (signature,
//                  body, url of a delivery), KEYS (current, next)
const { Client, Receiver } = require("@upstash/qstash");

const env = process.env;
const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });

async function publish() {
  const r = env.RECEIVER;
  const json = await client.publishJSON({ url: `${r}/js?x=1`, body: { hello: "js" } });
  const raw = await client.publish({
    url: `${r}/js-raw`,
    body: "raw",
    method: "PUT",
    headers: { "X-From": "js" },
    delay: 3600,
  });
  const dead = await client.publish({ url: `${r}/js-down`, body: "dead", retries: 0 });
  const q = client.queue({ queueName: "js-queue" });
  await q.upsert({ parallelism: 3 });
  const enqueued = await q.enqueueJSON({ url: `${r}/js-queued`, body: { q: 1 } });
  const batch = await client.batchJSON([
    { url: `${r}/js-batch-a`, body: { n: 1 } },
    { url: `${r}/js-batch-b`, body: { n: 2 }, queue: "js-queue" },
  ]);
  return {
    json: json.messageId,
    raw: raw.messageId,
    dead: dead.messageId,
    enqueued: enqueued.messageId,
    batch: batch.map((b) => b.messageId),
  };
}

async function inspect() {
  const ids = JSON.parse(env.IDS);
  const got = await client.messages.get(ids.raw);
  await client.messages.cancel(ids.raw);
  let afterCancel;
  try {
    await client.messages.get(ids.raw);
    afterCancel = "found";
  } catch (e) {
    afterCancel = String(e.status ?? e.message);
  }
  const q = client.queue({ queueName: "js-queue" });
  const queue = await q.get();
  await q.pause();
  const paused = (await q.get()).paused;
  await q.resume();
  const queues = (await q.list()).map((x) => [x.name, x.parallelism]);
  const dlq = await client.dlq.listMessages();
  const retried = await client.dlq.retry(ids.dead);
  const { keys, delivery } = { keys: JSON.parse(env.KEYS), delivery: JSON.parse(env.DELIVERY) };
  const right = new Receiver({ currentSigningKey: keys.current, nextSigningKey: keys.next });
  const wrong = new Receiver({
    currentSigningKey: "sig_not_the_nodes_key_00000000001",
    nextSigningKey: "sig_not_the_nodes_key_00000000002",
  });
  const verified = await right.verify(delivery);
  let refused;
  try {
    await wrong.verify(delivery);
    refused = "verified";
  } catch (e) {
    refused = e.message;
  }
  return {
    got: { messageId: got.messageId, method: got.method, body: got.body, header: got.header },
    afterCancel,
    queue: { name: queue.name, parallelism: queue.parallelism, paused },
    queues,
    dlq: dlq.messages.map((m) => [m.messageId, m.responseStatus]),
    retried: retried.responses.map((x) => x.messageId),
    verified,
    refused,
  };
}

(env.PHASE === "publish" ? publish() : inspect()).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
