// kafkajs (pure JavaScript protocol code) against sluice: admin, keyed produce with gzip,
// group consume with per-key order, commit and resume, offsets, delete, transactions
// (committed/aborted, offsets sent in a transaction, read_committed consume).
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const kafka = new Kafka({ clientId: 'interop', brokers: [process.env.BOOTSTRAP], logLevel: logLevel.NOTHING });
const TOPIC = 'kjs-interop';
const COUNT = 5000;
const KEYS = 10;
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function consumeN(groupId, n, timeoutMs) {
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, timeoutMs);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push([message.key ? message.key.toString() : null, message.value.toString()]);
        if (got.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  return got;
}

(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await check('create topic', async () => {
    await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 3 }], waitForLeaders: true });
    const topics = await admin.listTopics();
    assert(topics.includes(TOPIC), `listed: ${topics}`);
  });
  await check('produce 5000 keyed, gzip', async () => {
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    const seq = new Array(KEYS).fill(0);
    const messages = [];
    for (let i = 0; i < COUNT; i += 1) {
      const k = i % KEYS;
      messages.push({ key: `k${k}`, value: `k${k}|${seq[k]}` });
      seq[k] += 1;
    }
    for (let i = 0; i < messages.length; i += 500) {
      await producer.send({ topic: TOPIC, compression: CompressionTypes.GZIP, messages: messages.slice(i, i + 500) });
    }
    await producer.disconnect();
  });
  await check('consume in a group with per-key order', async () => {
    const got = await consumeN('kjs-group', COUNT, 60000);
    assert(got.length === COUNT, `got ${got.length}`);
    const perKey = new Map();
    for (const [key, value] of got) {
      const [k, s] = value.split('|');
      assert(k === key, `value ${value} under ${key}`);
      if (!perKey.has(key)) perKey.set(key, []);
      perKey.get(key).push(Number(s));
    }
    assert(perKey.size === KEYS, `keys ${perKey.size}`);
    for (const [key, seqs] of perKey) {
      seqs.forEach((s, i) => assert(s === i, `order broken for ${key} at ${i}`));
    }
  });
  await check('group resumes after committed offsets', async () => {
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: TOPIC, messages: [0, 1, 2].map((i) => ({ value: `late|${i}` })) });
    await producer.disconnect();
    const got = await consumeN('kjs-group', 3, 20000);
    assert(got.length === 3 && got.every(([, v]) => v.startsWith('late|')), JSON.stringify(got));
  });
  await check('fetch topic offsets and group offsets', async () => {
    const offsets = await admin.fetchTopicOffsets(TOPIC);
    const total = offsets.reduce((n, p) => n + Number(p.high), 0);
    assert(total === COUNT + 3, `high watermarks sum ${total}`);
    const committed = await admin.fetchOffsets({ groupId: 'kjs-group', topics: [TOPIC] });
    const sum = committed[0].partitions.reduce((n, p) => n + Number(p.offset), 0);
    assert(sum === COUNT + 3, `committed sum ${sum}`);
    const groups = await admin.listGroups();
    assert(groups.groups.some((g) => g.groupId === 'kjs-group'), 'group listed');
  });
  await check('describe configs and delete topic', async () => {
    const res = await admin.describeConfigs({ resources: [{ type: 2, name: TOPIC }], includeSynonyms: false });
    assert(res.resources[0].errorCode === 0, 'describe ok');
    await admin.deleteTopics({ topics: [TOPIC] });
    const topics = await admin.listTopics();
    assert(!topics.includes(TOPIC), 'deleted');
  });
  await check('transactions: commit, abort, sendOffsets, read_committed', async () => {
    const topic = 'kjs-txn';
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
    const producer = kafka.producer({ transactionalId: 'kjs-txn-1', maxInFlightRequests: 1, idempotent: true });
    await producer.connect();
    for (let t = 0; t < 4; t++) {
      const tx = await producer.transaction();
      await tx.send({ topic, messages: [{ value: `t${t}a`, partition: 0 }, { value: `t${t}b`, partition: 1 }] });
      if (t % 2 === 0) await tx.commit(); else await tx.abort();
    }
    const tx = await producer.transaction();
    await tx.send({ topic, messages: [{ value: 'with-offsets', partition: 0 }] });
    await tx.sendOffsets({ consumerGroupId: 'kjs-txn-g', topics: [{ topic, partitions: [{ partition: 0, offset: '3' }] }] });
    await tx.commit();
    await producer.disconnect();
    const offsets = await admin.fetchOffsets({ groupId: 'kjs-txn-g', topics: [topic] });
    const p0 = offsets[0].partitions.find((p) => p.partition === 0);
    assert(p0 && p0.offset === '3', `offset committed with the transaction: ${JSON.stringify(offsets)}`);
    const consumer = kafka.consumer({ groupId: 'kjs-txn-read', readUncommitted: false });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, 15000);
      consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message.value.toString());
          if (got.length >= 5) {
            clearTimeout(timer);
            setTimeout(resolve, 1000);
          }
        },
      }).catch(reject);
    });
    await consumer.disconnect();
    const want = ['t0a', 't0b', 't2a', 't2b', 'with-offsets'];
    assert(JSON.stringify(got.sort()) === JSON.stringify(want), `read_committed got ${got.sort()}`);
  });
  await admin.disconnect();
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || !passed ? 1 : 0);
})().catch((e) => {
  console.log(`FAIL harness: ${e.stack}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
