// amqplib (Node, the promise API) against sluice's AMQP 0-9-1 door: RabbitMQ's six tutorial
// flows (hello world, work queue with prefetch 1 and manual acks, fanout, direct routing,
// topics, RPC), publisher confirms, nack/reject with requeue, basic.get, the server's consumer
// cancel on queue delete, headers and alternate exchanges, mandatory returns, a 3-consumer
// work queue where every message is processed exactly once, every basic property and field
// table type amqplib encodes (compared byte for byte), 404/406 channel errors, and issue 16's
// queue policies (TTL and expiration into a DLX with x-death, rejection, retry loops,
// x-max-length drop-head and reject-publish, priorities, x-delivery-limit), stream queues
// (x-stream-offset), and (with KAFKA_PORT: sluice only) a Kafka topic read as a stream, the
// x-delayed-message exchange and x-retry-backoff.
// Needs AMQP_PORT (guest/guest on 127.0.0.1). Prints "N passed, N failed"; exits 1 on failure.
// Every check passes against RabbitMQ 3.10.8 (Debian's rabbitmq-server): what they assert is
// RabbitMQ's behaviour, not only sluice's.
const assert = require('node:assert/strict');
const path = require('node:path');
const amqp = require('amqplib');
// amqplib's own field-table encoder (not exported by its package map; loaded by path): the
// exact bytes it puts on the wire for a headers table.
const codec = require(path.join(path.dirname(require.resolve('amqplib')), 'lib', 'codec.js'));

const PORT = Number(process.env.AMQP_PORT);
if (!PORT) {
  console.log('AMQP_PORT not set');
  process.exit(2);
}
let passed = 0;
let failed = 0;
let opened = []; // connections of the running check, closed after it

async function check(name, fn) {
  opened = [];
  try {
    await within(30000, 'the whole check', fn());
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    for (const conn of opened) {
      if (conn.closedBy) console.log(`     the server closed a connection: ${conn.closedBy.message}`);
    }
  } finally {
    for (const conn of opened) {
      await conn.close().catch(() => {});
    }
  }
}

// Rejects after `ms` with `what` (a string, or a function giving one at that moment).
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`timed out after ${ms} ms: ${typeof what === 'function' ? what() : what}`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A promise and the function that resolves it.
function signal() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function connect() {
  const conn = await amqp.connect({
    protocol: 'amqp', hostname: '127.0.0.1', port: PORT, username: 'guest', password: 'guest', heartbeat: 30,
  });
  // A connection error also rejects whatever operation was waiting: the check sees it there
  // (and `check` prints the server's reason).
  conn.closedBy = null;
  conn.on('error', (e) => {
    conn.closedBy = e;
  });
  opened.push(conn);
  return conn;
}

// A channel that records how the server closed it (`closedBy`, the error with its `code`).
async function channel(conn, { confirm = false } = {}) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.closedBy = null;
  ch.closed = new Promise((resolve) => ch.once('close', resolve));
  ch.on('error', (e) => {
    ch.closedBy = e;
  });
  return ch;
}

const text = (msg) => msg.content.toString();
const bodies = (msgs) => msgs.map(text);

// Consumes `queue` until `n` messages came (acking each unless noAck), then cancels.
async function take(ch, queue, n, { noAck = false, ms = 10000 } = {}) {
  const got = [];
  const done = signal();
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (msg === null) return;
    msg.at = Date.now();
    got.push(msg);
    if (!noAck) ch.ack(msg);
    if (got.length === n) done.resolve();
  }, { noAck });
  try {
    await within(ms, () => `${n} messages from ${queue}, got ${JSON.stringify(bodies(got))}`, done.promise);
  } finally {
    await ch.cancel(consumerTag);
  }
  return got;
}

async function messageCount(ch, queue) {
  return (await ch.checkQueue(queue)).messageCount;
}

// Runs `fn(ch)` on a fresh channel of `conn`; the server must close that channel with `code`.
async function expectChannelClose(conn, code, what, fn) {
  const ch = await channel(conn);
  let thrown = null;
  try {
    await fn(ch);
  } catch (e) {
    thrown = e;
  }
  await within(5000, `${what}: the channel was not closed`, ch.closed);
  assert.ok(ch.closedBy, `${what}: the channel closed without an error (thrown: ${thrown})`);
  assert.equal(ch.closedBy.code, code, `${what}: ${ch.closedBy.message}`);
}

async function eventually(what, cond, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}

// True when a passive declare finds `queue`, false when the server answers 404.
async function queueExists(conn, queue) {
  const ch = await channel(conn);
  try {
    await ch.checkQueue(queue);
    await ch.close();
    return true;
  } catch (e) {
    await ch.closed;
    assert.equal(ch.closedBy && ch.closedBy.code, 404, `passive declare of ${queue}: ${e.message}`);
    return false;
  }
}

// The named queues the checks declare: deleted before the run, so that it can run again on
// the same broker (run.sh starts a fresh one).
const QUEUES = ['aj_404_q', 'aj_args_q', 'aj_cancel_q', 'aj_cancel_q2', 'aj_confirm_q', 'aj_dc_q', 'aj_exp_q',
  'aj_expired_q', 'aj_get_q', 'aj_hello', 'aj_len_dlq', 'aj_len_q', 'aj_lim_dlq', 'aj_lim_q', 'aj_prio_q',
  'aj_props', 'aj_rej_dlq', 'aj_rej_q', 'aj_requeue_q', 'aj_retry_wait', 'aj_retry_work', 'aj_rp_q',
  'aj_rpc_queue', 'aj_task_queue', 'aj_ttl_dlq', 'aj_ttl_q', 'aj_work3'];

async function cleanSlate() {
  const conn = await connect();
  const ch = await channel(conn);
  for (const q of QUEUES) await ch.deleteQueue(q);
  await conn.close();
}

// --- RabbitMQ's tutorials -----------------------------------------------------------------

async function helloWorld() {
  const conn = await connect();
  const ch = await channel(conn);
  const q = await ch.assertQueue('aj_hello', { durable: false });
  assert.deepEqual(q, { queue: 'aj_hello', messageCount: 0, consumerCount: 0 });
  assert.equal(ch.sendToQueue('aj_hello', Buffer.from('Hello World!'), { contentType: 'text/plain' }), true);
  const [msg] = await take(ch, 'aj_hello', 1, { noAck: true });
  assert.equal(text(msg), 'Hello World!');
  assert.equal(msg.properties.contentType, 'text/plain');
  assert.equal(msg.fields.exchange, '');
  assert.equal(msg.fields.routingKey, 'aj_hello');
  assert.equal(msg.fields.redelivered, false);
  assert.equal(await messageCount(ch, 'aj_hello'), 0);
}

async function workQueue() {
  const count = 40;
  const setup = await connect();
  const sch = await channel(setup);
  await sch.assertQueue('aj_task_queue', { durable: true });
  const seen = [];
  const all = signal();
  const workers = {};
  const modes = new Set();
  // Two workers, each on its own connection with prefetch 1: the slow one takes 100 ms a task.
  for (const [name, delay] of [['fast', 0], ['slow', 100]]) {
    const ch = await channel(await connect());
    await ch.prefetch(1);
    const w = { count: 0, inFlight: 0, maxInFlight: 0 };
    workers[name] = w;
    await ch.consume('aj_task_queue', (msg) => {
      w.inFlight += 1;
      w.maxInFlight = Math.max(w.maxInFlight, w.inFlight);
      modes.add(msg.properties.deliveryMode);
      setTimeout(() => {
        seen.push(text(msg));
        w.count += 1;
        w.inFlight -= 1;
        ch.ack(msg);
        if (seen.length >= count) all.resolve();
      }, delay);
    }, { noAck: false });
  }
  for (let i = 0; i < count; i += 1) {
    sch.sendToQueue('aj_task_queue', Buffer.from(`task ${i}${'.'.repeat(i % 3)}`), { persistent: true });
  }
  await within(20000, () => `${count} tasks, ${seen.length} done`, all.promise);
  const want = Array.from({ length: count }, (_, i) => `task ${i}${'.'.repeat(i % 3)}`);
  assert.deepEqual([...seen].sort(), [...want].sort(), 'each task processed exactly once');
  assert.deepEqual(workers.fast.maxInFlight, 1, 'prefetch 1: one unacked task at a time');
  assert.deepEqual(workers.slow.maxInFlight, 1, 'prefetch 1: one unacked task at a time');
  assert.ok(workers.slow.count >= 1, `the slow worker got nothing: ${JSON.stringify(workers)}`);
  assert.ok(workers.fast.count > workers.slow.count,
    `fair dispatch: the slow worker should get fewer: ${JSON.stringify(workers)}`);
  console.log(`     (fast worker ${workers.fast.count} tasks, slow worker ${workers.slow.count})`);
  assert.deepEqual([...modes], [2], 'persistent tasks are delivered persistent');
  assert.equal(await messageCount(sch, 'aj_task_queue'), 0);
}

async function fanout() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_logs', 'fanout', { durable: false });
  const queues = [];
  for (let i = 0; i < 2; i += 1) {
    const { queue } = await ch.assertQueue('', { exclusive: true });
    assert.match(queue, /^amq\.gen-/, 'a server-named queue');
    await ch.bindQueue(queue, 'aj_logs', '');
    queues.push(queue);
  }
  assert.notEqual(queues[0], queues[1]);
  for (let i = 0; i < 3; i += 1) ch.publish('aj_logs', '', Buffer.from(`log ${i}`));
  for (const q of queues) {
    const got = await take(ch, q, 3);
    assert.deepEqual(bodies(got), ['log 0', 'log 1', 'log 2'], q);
    assert.ok(got.every((m) => m.fields.exchange === 'aj_logs'));
  }
}

async function directRouting() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_direct_logs', 'direct', { durable: false });
  const errors = (await ch.assertQueue('', { exclusive: true })).queue;
  const everything = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(errors, 'aj_direct_logs', 'error');
  for (const sev of ['info', 'warning', 'error']) await ch.bindQueue(everything, 'aj_direct_logs', sev);
  for (const sev of ['info', 'error', 'warning', 'debug']) ch.publish('aj_direct_logs', sev, Buffer.from(`${sev} msg`));
  const errs = await take(ch, errors, 1);
  assert.deepEqual(bodies(errs), ['error msg']);
  assert.equal(errs[0].fields.routingKey, 'error');
  assert.deepEqual(bodies(await take(ch, everything, 3)), ['info msg', 'error msg', 'warning msg']);
  assert.equal(await messageCount(ch, errors), 0);
  assert.equal(await messageCount(ch, everything), 0, 'debug is routed nowhere');
}

async function topics() {
  // Tutorial 5's own example: Q1 `*.orange.*`; Q2 `*.*.rabbit` and `lazy.#`.
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_topic_logs', 'topic', { durable: false });
  const q1 = (await ch.assertQueue('', { exclusive: true })).queue;
  const q2 = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(q1, 'aj_topic_logs', '*.orange.*');
  await ch.bindQueue(q2, 'aj_topic_logs', '*.*.rabbit');
  await ch.bindQueue(q2, 'aj_topic_logs', 'lazy.#');
  const keys = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox', 'lazy.brown.fox',
    'lazy.pink.rabbit', 'quick.brown.fox', 'orange', 'quick.orange.male.rabbit', 'lazy.orange.male.rabbit',
    'lazy'];
  for (const key of keys) ch.publish('aj_topic_logs', key, Buffer.from(key));
  assert.deepEqual(bodies(await take(ch, q1, 3)), ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox']);
  // lazy.pink.rabbit matches both of Q2's bindings: it comes once; `#` matches zero words too.
  assert.deepEqual(bodies(await take(ch, q2, 6)), ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox',
    'lazy.pink.rabbit', 'lazy.orange.male.rabbit', 'lazy']);
  assert.equal(await messageCount(ch, q1), 0);
  assert.equal(await messageCount(ch, q2), 0);
}

async function rpc() {
  const fib = (n) => (n < 2 ? n : fib(n - 1) + fib(n - 2));
  // The server: prefetch 1, answers each request on its reply_to with its correlation_id.
  const sconn = await connect();
  const server = await channel(sconn);
  await server.assertQueue('aj_rpc_queue', { durable: false });
  await server.prefetch(1);
  await server.consume('aj_rpc_queue', (msg) => {
    const n = Number(text(msg));
    server.sendToQueue(msg.properties.replyTo, Buffer.from(String(fib(n))), {
      correlationId: msg.properties.correlationId,
    });
    server.ack(msg);
  });
  // The client: an exclusive server-named callback queue.
  const cconn = await connect();
  const client = await channel(cconn);
  const { queue: replyTo } = await client.assertQueue('', { exclusive: true });
  assert.match(replyTo, /^amq\.gen-/);
  const answers = {};
  const all = signal();
  await client.consume(replyTo, (msg) => {
    answers[msg.properties.correlationId] = text(msg);
    if (Object.keys(answers).length === 3) all.resolve();
  }, { noAck: true });
  const requests = { 'corr-a': 10, 'corr-b': 20, 'corr-c': 25 };
  for (const [id, n] of Object.entries(requests)) {
    client.sendToQueue('aj_rpc_queue', Buffer.from(String(n)), { correlationId: id, replyTo });
  }
  await within(10000, () => `3 answers, got ${JSON.stringify(answers)}`, all.promise);
  assert.deepEqual(answers, { 'corr-a': '55', 'corr-b': '6765', 'corr-c': '75025' });
  // Exclusive: another connection may not use the reply queue (405), and it goes with its owner.
  await expectChannelClose(sconn, 405, 'consume from another connection\'s exclusive queue',
    (ch) => ch.consume(replyTo, () => {}));
  await cconn.close();
  await eventually('the exclusive reply queue goes with its connection', async () => !(await queueExists(sconn, replyTo)));
}

// --- Confirms, acknowledgements, basic.get, cancels ---------------------------------------

async function publisherConfirms() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_confirm_q', { durable: true });
  const count = 200;
  const calls = new Array(count).fill(0);
  const errors = [];
  let multiple = 0;
  ch.on('ack', (f) => {
    if (f.multiple) multiple += 1;
  });
  for (let i = 0; i < count; i += 1) {
    ch.sendToQueue('aj_confirm_q', Buffer.from(`c${i}`), { persistent: true }, (err) => {
      calls[i] += 1;
      if (err) errors.push([i, err.message]);
    });
  }
  await within(10000, 'waitForConfirms', ch.waitForConfirms());
  assert.deepEqual(errors, [], 'no publish is nacked');
  assert.ok(calls.every((c) => c === 1), `each callback exactly once: ${calls}`);
  assert.equal(await messageCount(ch, 'aj_confirm_q'), count);
  // An unroutable publish (not mandatory) is confirmed too, as RabbitMQ does.
  const lost = signal();
  ch.publish('amq.direct', 'aj-no-binding', Buffer.from('lost'), {}, (err) => lost.resolve(err));
  assert.equal(await within(5000, 'the confirm of an unroutable publish', lost.promise), null);
  await within(5000, 'waitForConfirms with nothing outstanding', ch.waitForConfirms());
  console.log(`     (${multiple} acks covered several publishes)`);
}

async function nackRequeue() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertQueue('aj_requeue_q', { durable: false });
  for (const b of ['r0', 'r1', 'r2']) ch.sendToQueue('aj_requeue_q', Buffer.from(b));
  await ch.prefetch(3);
  const got = [];
  const first = signal();
  const again = signal();
  const { consumerTag } = await ch.consume('aj_requeue_q', (msg) => {
    got.push([text(msg), msg.fields.redelivered]);
    if (got.length === 3) {
      ch.nack(msg, true, true); // all three, back to the queue
      first.resolve();
    } else if (got.length > 3) {
      ch.ack(msg);
      if (got.length === 6) again.resolve();
    }
  });
  await within(5000, () => `3 deliveries: ${JSON.stringify(got)}`, first.promise);
  await within(5000, () => `3 redeliveries: ${JSON.stringify(got)}`, again.promise);
  assert.deepEqual(got, [['r0', false], ['r1', false], ['r2', false], ['r0', true], ['r1', true], ['r2', true]],
    'nack(multiple, requeue): back in their original order, marked redelivered');
  await ch.cancel(consumerTag);
  // basic.reject with requeue, on a message from basic.get.
  ch.sendToQueue('aj_requeue_q', Buffer.from('single'));
  const m1 = await eventuallyGet(ch, 'aj_requeue_q');
  assert.equal(m1.fields.redelivered, false);
  ch.reject(m1, true);
  const m2 = await eventuallyGet(ch, 'aj_requeue_q');
  assert.deepEqual([text(m2), m2.fields.redelivered], ['single', true]);
  ch.ack(m2);
  assert.equal(await messageCount(ch, 'aj_requeue_q'), 0);
}

// basic.get until a message comes (it was published on a channel that may not have flushed).
async function eventuallyGet(ch, queue, options = { noAck: false }) {
  let msg = false;
  await eventually(`a message in ${queue}`, async () => {
    msg = await ch.get(queue, options);
    return msg !== false;
  });
  return msg;
}

async function basicGet() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_get_q', { durable: false });
  assert.equal(await ch.get('aj_get_q'), false, 'get on an empty queue is get-empty');
  ch.sendToQueue('aj_get_q', Buffer.from('one'));
  ch.sendToQueue('aj_get_q', Buffer.from('two'));
  await ch.waitForConfirms();
  const one = await ch.get('aj_get_q', { noAck: false });
  assert.equal(text(one), 'one');
  assert.equal(one.fields.messageCount, 1, 'basic.get-ok counts the messages left');
  assert.equal(one.fields.redelivered, false);
  assert.equal(await messageCount(ch, 'aj_get_q'), 1, 'the unacked one is not ready');
  ch.ack(one);
  const two = await ch.get('aj_get_q', { noAck: true });
  assert.equal(text(two), 'two');
  assert.equal(two.fields.messageCount, 0);
  assert.equal(await ch.get('aj_get_q'), false);
  assert.equal(await messageCount(ch, 'aj_get_q'), 0);
}

async function consumerCancelOnDelete() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertQueue('aj_cancel_q', { durable: false });
  ch.sendToQueue('aj_cancel_q', Buffer.from('held'));
  await ch.prefetch(1);
  const calls = [];
  const held = signal();
  const cancelled = signal();
  await ch.consume('aj_cancel_q', (msg) => {
    calls.push(msg === null ? null : text(msg));
    if (msg === null) cancelled.resolve();
    else held.resolve();
  });
  await within(5000, 'the consumer got its message', held.promise);
  // Another connection deletes the queue: amqplib calls the consumer with null.
  const other = await channel(await connect());
  await other.deleteQueue('aj_cancel_q');
  await within(5000, () => `the consumer was not cancelled: ${JSON.stringify(calls)}`, cancelled.promise);
  assert.deepEqual(calls, ['held', null]);
  // The channel stays open and usable.
  assert.equal(ch.closedBy, null);
  await ch.assertQueue('aj_cancel_q2', { durable: false });
  await ch.deleteQueue('aj_cancel_q2');
  assert.equal(await queueExists(conn, 'aj_cancel_q'), false);
}

// --- Exchanges and returns ----------------------------------------------------------------

async function headersExchange() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_docs', 'headers', { durable: false });
  const all = (await ch.assertQueue('', { exclusive: true })).queue;
  const any = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(all, 'aj_docs', '', { 'x-match': 'all', format: 'pdf', type: 'report' });
  await ch.bindQueue(any, 'aj_docs', '', { 'x-match': 'any', format: 'pdf', type: 'log' });
  for (const [body, headers] of [['a', { format: 'pdf', type: 'report' }], ['b', { format: 'zip', type: 'log' }],
    ['c', { format: 'pdf' }], ['d', { format: 'zip', type: 'report' }], ['e', {}]]) {
    ch.publish('aj_docs', 'ignored', Buffer.from(body), { headers });
  }
  assert.deepEqual(bodies(await take(ch, all, 1)), ['a']);
  assert.deepEqual(bodies(await take(ch, any, 3)), ['a', 'b', 'c']);
  assert.equal(await messageCount(ch, all), 0);
  assert.equal(await messageCount(ch, any), 0);
}

async function alternateExchange() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  const returned = [];
  ch.on('return', (msg) => returned.push(text(msg)));
  await ch.assertExchange('aj_ae_spare', 'fanout', { durable: false });
  await ch.assertExchange('aj_ae_main', 'direct', { durable: false, alternateExchange: 'aj_ae_spare' });
  const known = (await ch.assertQueue('', { exclusive: true })).queue;
  const unrouted = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(known, 'aj_ae_main', 'known');
  await ch.bindQueue(unrouted, 'aj_ae_spare', '');
  ch.publish('aj_ae_main', 'known', Buffer.from('routed'), { mandatory: true });
  ch.publish('aj_ae_main', 'other', Buffer.from('to the alternate'), { mandatory: true });
  await ch.waitForConfirms();
  assert.deepEqual(bodies(await take(ch, known, 1)), ['routed']);
  const spare = await take(ch, unrouted, 1);
  assert.deepEqual(bodies(spare), ['to the alternate']);
  assert.equal(spare[0].fields.exchange, 'aj_ae_main', 'delivered with the exchange it was published to');
  assert.equal(spare[0].fields.routingKey, 'other');
  assert.deepEqual(returned, [], 'a route through the alternate exchange is a route');
  // With no route through the alternate either, a mandatory publish is returned.
  await ch.unbindQueue(unrouted, 'aj_ae_spare', '');
  ch.publish('aj_ae_main', 'other', Buffer.from('nowhere'), { mandatory: true });
  await ch.waitForConfirms();
  assert.deepEqual(returned, ['nowhere']);
}

async function mandatoryReturned() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  const events = [];
  const returned = [];
  ch.on('return', (msg) => {
    events.push(`return ${text(msg)}`);
    returned.push(msg);
  });
  await ch.assertExchange('aj_mand', 'direct', { durable: false });
  const q = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(q, 'aj_mand', 'bound');
  const props = { mandatory: true, messageId: 'm-1', headers: { attempt: 3 }, contentType: 'text/plain' };
  ch.publish('aj_mand', 'unbound', Buffer.from('bounced'), props, (err) => events.push(`confirm bounced ${err}`));
  ch.publish('', 'aj-no-such-queue', Buffer.from('bounced too'), props, (err) => events.push(`confirm too ${err}`));
  ch.publish('aj_mand', 'bound', Buffer.from('kept'), props, (err) => events.push(`confirm kept ${err}`));
  ch.publish('aj_mand', 'unbound', Buffer.from('dropped'), {}, (err) => events.push(`confirm dropped ${err}`));
  await within(5000, 'the confirms', ch.waitForConfirms());
  // Every publish is confirmed (acked), and RabbitMQ sends a returned message's basic.return
  // before its basic.ack; confirms of different messages may come in any order.
  assert.deepEqual([...events].sort(), ['confirm bounced null', 'confirm dropped null', 'confirm kept null',
    'confirm too null', 'return bounced', 'return bounced too'], JSON.stringify(events));
  assert.ok(events.indexOf('return bounced') < events.indexOf('confirm bounced null'), JSON.stringify(events));
  assert.ok(events.indexOf('return bounced too') < events.indexOf('confirm too null'), JSON.stringify(events));
  const [r] = returned;
  assert.equal(r.fields.replyCode, 312);
  assert.equal(r.fields.replyText, 'NO_ROUTE');
  assert.equal(r.fields.exchange, 'aj_mand');
  assert.equal(r.fields.routingKey, 'unbound');
  assert.equal(r.properties.messageId, 'm-1');
  assert.equal(r.properties.contentType, 'text/plain');
  assert.deepEqual(r.properties.headers, { attempt: 3 });
  assert.equal(returned[1].fields.exchange, '');
  assert.equal(returned[1].fields.routingKey, 'aj-no-such-queue');
  assert.deepEqual(bodies(await take(ch, q, 1)), ['kept']);
}

async function threeConsumersExactlyOnce() {
  // Three consumers on their own connections (prefetch 10, manual acks); the third leaves
  // after acking 10, closing its channel with the unacked ones in hand: those come back
  // redelivered to the other two. Every message is acked exactly once.
  const count = 300;
  const setup = await channel(await connect(), { confirm: true });
  await setup.assertQueue('aj_work3', { durable: true });
  const acked = new Map();
  const workers = { a: 0, b: 0, c: 0 };
  const redelivered = [];
  const heldByC = [];
  const done = signal();
  const ackOnce = (name, msg) => {
    const body = text(msg);
    acked.set(body, (acked.get(body) || 0) + 1);
    workers[name] += 1;
    if (acked.size === count) done.resolve();
  };
  const channels = {};
  for (const name of ['a', 'b', 'c']) {
    const ch = await channel(await connect());
    channels[name] = ch;
    await ch.prefetch(10);
  }
  for (const name of ['a', 'b']) {
    const ch = channels[name];
    await ch.consume('aj_work3', (msg) => {
      if (msg.fields.redelivered) redelivered.push(text(msg));
      // Some work that takes a little while, out of order across messages.
      setTimeout(() => {
        ch.ack(msg);
        ackOnce(name, msg);
      }, Math.random() * 3);
    });
  }
  const c = channels.c;
  let leaving = false;
  await c.consume('aj_work3', (msg) => {
    if (leaving) return;
    if (workers.c < 10) {
      c.ack(msg);
      ackOnce('c', msg);
      return;
    }
    heldByC.push(text(msg));
    if (heldByC.length === 5) {
      leaving = true;
      c.close().catch(() => {}); // unacked: back to the queue, for the others
    }
  });
  for (let i = 0; i < count; i += 1) setup.sendToQueue('aj_work3', Buffer.from(`w${i}`), { persistent: true });
  await within(10000, 'confirms', setup.waitForConfirms());
  await within(20000, () => `all ${count} acked, got ${acked.size}`, done.promise);
  const twice = [...acked].filter(([, n]) => n !== 1);
  assert.deepEqual(twice, [], 'a message was processed more than once');
  assert.equal(acked.size, count);
  assert.equal(heldByC.length, 5, 'the third consumer got to hold five unacked messages');
  assert.ok(workers.a > 0 && workers.b > 0 && workers.c === 10, JSON.stringify(workers));
  for (const body of heldByC) {
    assert.ok(redelivered.includes(body), `${body} (held by the leaver) came back redelivered: ${redelivered}`);
  }
  assert.equal(await messageCount(setup, 'aj_work3'), 0);
}

// --- Properties and field tables ----------------------------------------------------------

// Records the raw bytes a connection reads from here on, and returns a function that gives
// the content header frames (type 2) among them.
function captureContentHeaders(conn) {
  const c = conn.connection;
  const chunks = [Buffer.from(c.rest || Buffer.alloc(0))];
  const read = c.stream.read.bind(c.stream);
  c.stream.read = (...args) => {
    const b = read(...args);
    if (b) chunks.push(Buffer.from(b));
    return b;
  };
  return () => {
    const all = Buffer.concat(chunks);
    const headers = [];
    let o = 0;
    while (o + 7 <= all.length) {
      const type = all[o];
      const size = all.readUInt32BE(o + 3);
      if (o + 8 + size > all.length) break;
      if (type === 2) headers.push(all.subarray(o + 7, o + 7 + size));
      assert.equal(all[o + 7 + size], 0xce, 'frame end');
      o += 8 + size;
    }
    return headers;
  };
}

// The headers table (its contents, without the length) of a content header frame's payload.
function headersTable(payload) {
  const flags = payload.readUInt16BE(12);
  let o = 14;
  if (flags & 0x8000) o += 1 + payload[o];
  if (flags & 0x4000) o += 1 + payload[o];
  assert.ok(flags & 0x2000, 'the content header has a headers table');
  const len = payload.readUInt32BE(o);
  return payload.subarray(o + 4, o + 4 + len);
}

// A field table's contents as {key: [tag, value]} with every tag kept: an integer's width and
// signedness, string v. byte array, float v. double. Scalars as hex of their bytes.
function tagged(buf) {
  let o = 0;
  const sizes = { t: 1, b: 1, B: 1, s: 2, u: 2, I: 4, i: 4, f: 4, l: 8, d: 8, T: 8, D: 5, V: 0 };
  function value() {
    const tag = String.fromCharCode(buf[o]);
    o += 1;
    if (tag in sizes) {
      const v = buf.subarray(o, o + sizes[tag]).toString('hex');
      o += sizes[tag];
      return [tag, v];
    }
    const len = buf.readUInt32BE(o);
    o += 4;
    const body = buf.subarray(o, o + len);
    o += len;
    if (tag === 'S' || tag === 'x') return [tag, body.toString('hex')];
    if (tag === 'F') return [tag, tagged(body)];
    if (tag === 'A') {
      const items = [];
      const end = o;
      o -= len;
      while (o < end) items.push(value());
      return [tag, items];
    }
    throw new Error(`unknown field type tag ${JSON.stringify(tag)} at ${o - 5}`);
  }
  const out = {};
  while (o < buf.length) {
    const klen = buf[o];
    const key = buf.toString('utf8', o + 1, o + 1 + klen);
    o += 1 + klen;
    out[key] = value();
  }
  return out;
}

async function propertiesRoundTrip() {
  // Every field value type amqplib can encode, nested in tables and arrays.
  const headers = {
    str: 'text ü ✓',
    i8: { '!': 'int8', value: -5 },
    u8: { '!': 'uint8', value: 250 },
    i16: { '!': 'int16', value: -30000 },
    u16: { '!': 'uint16', value: 60000 },
    i32: { '!': 'int32', value: -2000000000 },
    u32: { '!': 'uint32', value: 4000000000 },
    i64: { '!': 'int64', value: -(2 ** 40) - 7 },
    guessed: [1, 300, 70000, 2 ** 40, 2.5], // amqplib picks b, s, I, l, d
    f32: { '!': 'float', value: 1.5 },
    f64: 3.141592653589793,
    dec: { '!': 'decimal', value: { places: 2, digits: 12345 } },
    ts: { '!': 'timestamp', value: 1700000000 },
    yes: true,
    no: false,
    nothing: null,
    bytes: Buffer.from([0, 1, 2, 0xce, 0xff]),
    arr: ['two', [3, { four: 4 }], null, true, { '!': 'timestamp', value: 5 }],
    emptyArr: [],
    nested: { a: { b: { c: 'deep', n: [1, 2], d: { '!': 'decimal', value: { places: 0, digits: 7 } } } }, empty: {} },
  };
  const props = {
    contentType: 'application/json',
    contentEncoding: 'identity',
    headers,
    deliveryMode: 2,
    priority: 7,
    correlationId: 'corr-1',
    replyTo: 'aj_reply',
    expiration: '600000',
    messageId: 'msg-1',
    timestamp: 1700000000,
    type: 'order.created',
    userId: 'guest', // RabbitMQ refuses a user-id other than the connection's user
    appId: 'amqplib-interop',
  };
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_props', { durable: false });
  ch.sendToQueue('aj_props', Buffer.from('{"all":14}'), props);
  // amqplib's publish never sets cluster-id (deprecated); its channel encodes it though.
  const fields = { exchange: '', routingKey: 'aj_props', mandatory: false, immediate: false, ticket: undefined };
  ch.sendMessage({ ...fields, ...props, clusterId: 'cluster-1' }, { ...props, clusterId: 'cluster-1' }, Buffer.from('cid'));
  ch.pushConfirmCallback(null);
  await ch.waitForConfirms();
  const rconn = await connect();
  const frames = captureContentHeaders(rconn);
  const got = await take(await channel(rconn), 'aj_props', 2);
  assert.deepEqual(bodies(got), ['{"all":14}', 'cid']);
  // What amqplib decodes: the integers as numbers, timestamps and decimals tagged.
  const decodedHeaders = {
    ...headers,
    i8: -5, u8: 250, i16: -30000, u16: 60000, i32: -2000000000, u32: 4000000000, i64: -(2 ** 40) - 7,
    f32: 1.5,
    arr: ['two', [3, { four: 4 }], null, true, { '!': 'timestamp', value: 5 }],
  };
  assert.deepEqual(got[0].properties, { ...props, headers: decodedHeaders, clusterId: undefined });
  assert.deepEqual(got[1].properties, { ...props, headers: decodedHeaders, clusterId: 'cluster-1' });
  // And the bytes: the headers table as delivered has every type tag amqplib sent.
  const buf = Buffer.alloc(65536);
  const size = codec.encodeTable(buf, headers, 0);
  const sent = buf.subarray(4, size);
  const received = frames().map(headersTable);
  assert.equal(received.length, 2, 'two content headers');
  for (const table of received) {
    // The same entries in another order would be equal here (a table is a map); a changed
    // type is not.
    assert.deepEqual(tagged(table), tagged(sent), 'the headers table came back with other types');
  }
  const same = received.every((t) => t.equals(sent));
  console.log(`     (headers table ${same ? 'byte-identical to what amqplib sent' : 'has the same entries in another order'})`);
}

// --- Channel errors -----------------------------------------------------------------------

async function notFound() {
  const conn = await connect();
  const keep = await channel(conn);
  await expectChannelClose(conn, 404, 'passive declare of a missing queue', (ch) => ch.checkQueue('aj_never_declared'));
  await expectChannelClose(conn, 404, 'binding to a missing exchange', async (ch) => {
    await ch.assertQueue('aj_404_q', { durable: false });
    await ch.bindQueue('aj_404_q', 'aj_never_declared_x', 'k');
  });
  // Publishing to a missing exchange closes the channel with 404; the confirm callback fails.
  const cch = await channel(conn, { confirm: true });
  const confirm = signal();
  cch.publish('aj_never_declared_x', 'k', Buffer.from('x'), {}, (err) => confirm.resolve(err));
  await within(5000, 'the channel was not closed', cch.closed);
  assert.equal(cch.closedBy && cch.closedBy.code, 404, String(cch.closedBy));
  const err = await within(5000, 'the confirm callback', confirm.promise);
  assert.ok(err instanceof Error, 'the confirm callback gets an error');
  // Only those channels closed: the connection and its other channel work.
  assert.equal(keep.closedBy, null);
  const q = await keep.checkQueue('aj_404_q');
  assert.deepEqual(q, { queue: 'aj_404_q', messageCount: 0, consumerCount: 0 });
}

async function checkExchange() {
  // amqplib's checkExchange is exchange.declare with passive set and an empty type (its
  // type is ignored when passive): declare-ok for an existing exchange, 404 for a missing one.
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_checked_x', 'topic', { durable: false });
  await ch.checkExchange('aj_checked_x');
  await ch.checkExchange('amq.direct');
  await expectChannelClose(conn, 404, 'passive declare of a missing exchange',
    (c) => c.checkExchange('aj_never_declared_x'));
  assert.equal(ch.closedBy, null);
  await ch.checkExchange('aj_checked_x');
}

async function deleteMissing() {
  // RabbitMQ answers queue.delete and exchange.delete of a name that does not exist with
  // delete-ok (cleanup code relies on it), not with a 404.
  const conn = await connect();
  const ch = await channel(conn);
  assert.deepEqual(await ch.deleteQueue('aj_never_declared'), { messageCount: 0 });
  assert.deepEqual(await ch.deleteExchange('aj_never_declared_x'), {});
  assert.equal(ch.closedBy, null);
}

async function preconditionFailed() {
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertQueue('aj_args_q', { durable: false, arguments: { 'x-max-length': 5 } });
  await ch.assertQueue('aj_args_q', { durable: false, arguments: { 'x-max-length': 5 } }); // same: fine
  await expectChannelClose(conn, 406, 'redeclare with another x-max-length',
    (c) => c.assertQueue('aj_args_q', { durable: false, arguments: { 'x-max-length': 6 } }));
  await expectChannelClose(conn, 406, 'redeclare with another durable flag',
    (c) => c.assertQueue('aj_args_q', { durable: true, arguments: { 'x-max-length': 5 } }));
  await ch.assertExchange('aj_kind_x', 'direct', { durable: false });
  await expectChannelClose(conn, 406, 'redeclare an exchange with another type',
    (c) => c.assertExchange('aj_kind_x', 'fanout', { durable: false }));
  assert.equal(ch.closedBy, null);
  assert.equal(await messageCount(ch, 'aj_args_q'), 0);
}

// --- Issue 16: queue policies -------------------------------------------------------------

function xDeath(msg) {
  const deaths = msg.properties.headers && msg.properties.headers['x-death'];
  assert.ok(Array.isArray(deaths) && deaths.length > 0, `x-death: ${JSON.stringify(msg.properties.headers)}`);
  return deaths;
}

async function dlq(ch, exchange, queue, keys) {
  await ch.assertExchange(exchange, 'direct', { durable: false });
  await ch.assertQueue(queue, { durable: false });
  for (const key of keys) await ch.bindQueue(queue, exchange, key);
}

// Starts a consumer on `queue` now; `next(n)` waits for the first n messages (each acked).
async function collector(ch, queue) {
  const got = [];
  const waiting = [];
  await ch.consume(queue, (msg) => {
    if (msg === null) return;
    msg.at = Date.now();
    got.push(msg);
    ch.ack(msg);
    for (const w of waiting) if (got.length >= w.n) w.resolve();
  });
  return {
    got,
    next(n, ms = 5000) {
      if (got.length >= n) return Promise.resolve(got.slice(0, n));
      const s = signal();
      waiting.push({ n, resolve: s.resolve });
      return within(ms, () => `${n} messages from ${queue}, got ${JSON.stringify(bodies(got))}`,
        s.promise.then(() => got.slice(0, n)));
    },
  };
}

async function ttlIntoDlx() {
  const conn = await connect();
  const ch = await channel(conn);
  await dlq(ch, 'aj_ttl_dlx', 'aj_ttl_dlq', ['by-queue', 'by-message']);
  await ch.assertQueue('aj_ttl_q', {
    durable: false, messageTtl: 200, deadLetterExchange: 'aj_ttl_dlx', deadLetterRoutingKey: 'by-queue',
  });
  await ch.assertQueue('aj_exp_q', { durable: false, deadLetterExchange: 'aj_ttl_dlx', deadLetterRoutingKey: 'by-message' });
  const dead = await collector(ch, 'aj_ttl_dlq');
  const sent = {};
  sent['queue-ttl'] = Date.now();
  ch.sendToQueue('aj_ttl_q', Buffer.from('queue-ttl'), { headers: { app: 'a' }, messageId: 'q1' });
  sent['own-ttl'] = Date.now();
  ch.sendToQueue('aj_exp_q', Buffer.from('own-ttl'), { expiration: 100, messageId: 'm1' });
  const got = await dead.next(2);
  assert.deepEqual(bodies(got).sort(), ['own-ttl', 'queue-ttl']);
  for (const msg of got) {
    const body = text(msg);
    const [queue, ttl, key] = body === 'queue-ttl' ? ['aj_ttl_q', 200, 'by-queue'] : ['aj_exp_q', 100, 'by-message'];
    const waited = msg.at - sent[body];
    // Never before its time (the broker saw the publish after `sent`); and without a reader.
    assert.ok(waited >= ttl - 2, `${body} dead-lettered after ${waited} ms, its TTL is ${ttl}`);
    assert.ok(waited < ttl + 3000, `${body} dead-lettered only after ${waited} ms`);
    assert.equal(msg.fields.exchange, 'aj_ttl_dlx');
    assert.equal(msg.fields.routingKey, key);
    const [death, ...more] = xDeath(msg);
    assert.equal(more.length, 0);
    const { time, ...rest } = death;
    const want = { count: 1, reason: 'expired', queue, exchange: '', 'routing-keys': [queue] };
    if (body === 'own-ttl') want['original-expiration'] = '100';
    assert.deepEqual(rest, want, `${body}'s x-death`);
    assert.equal(time['!'], 'timestamp', 'x-death time is a timestamp');
    assert.ok(Math.abs(time.value - sent[body] / 1000) < 30, `x-death time ${time.value}`);
    const h = msg.properties.headers;
    assert.equal(h['x-first-death-reason'], 'expired');
    assert.equal(h['x-first-death-queue'], queue);
    assert.equal(h['x-first-death-exchange'], '');
    assert.equal(msg.properties.expiration, undefined, 'expiration is removed when dead-lettered');
    assert.equal(msg.properties.messageId, body === 'queue-ttl' ? 'q1' : 'm1', 'other properties stay');
    if (body === 'queue-ttl') assert.equal(h.app, 'a', 'the message\'s own headers stay');
  }
  assert.equal(await messageCount(ch, 'aj_ttl_q'), 0);
  assert.equal(await messageCount(ch, 'aj_exp_q'), 0);
}

async function expiredNeverDelivered() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_expired_q', { durable: false });
  ch.sendToQueue('aj_expired_q', Buffer.from('short'), { expiration: 50 });
  ch.sendToQueue('aj_expired_q', Buffer.from('long'), { expiration: 60000 });
  ch.sendToQueue('aj_expired_q', Buffer.from('none'));
  await ch.waitForConfirms();
  await sleep(150); // the time for `short` to expire (not an assertion)
  const got = await take(ch, 'aj_expired_q', 2);
  assert.deepEqual(bodies(got), ['long', 'none']);
  assert.equal(got[0].properties.expiration, '60000', 'a live message keeps its expiration');
  assert.equal(await ch.get('aj_expired_q'), false);
}

async function rejectedIntoDlx() {
  const conn = await connect();
  const ch = await channel(conn);
  // No x-dead-letter-routing-key: a dead letter keeps its routing key (here the queue's name).
  await dlq(ch, 'aj_rej_dlx', 'aj_rej_dlq', ['aj_rej_q']);
  await ch.assertQueue('aj_rej_q', { durable: false, deadLetterExchange: 'aj_rej_dlx' });
  const dead = await collector(ch, 'aj_rej_dlq');
  ch.sendToQueue('aj_rej_q', Buffer.from('bad'));
  ch.sendToQueue('aj_rej_q', Buffer.from('worse'));
  await ch.prefetch(2);
  const seen = [];
  await ch.consume('aj_rej_q', (msg) => {
    seen.push(text(msg));
    if (text(msg) === 'bad') ch.reject(msg, false);
    else ch.nack(msg, false, false);
  });
  const got = await dead.next(2);
  assert.deepEqual(bodies(got), ['bad', 'worse']);
  assert.deepEqual(seen, ['bad', 'worse'], 'not redelivered');
  for (const msg of got) {
    const [death] = xDeath(msg);
    assert.equal(death.reason, 'rejected');
    assert.equal(death.queue, 'aj_rej_q');
    assert.equal(death.count, 1);
    assert.deepEqual(death['routing-keys'], ['aj_rej_q']);
    assert.equal(msg.fields.routingKey, 'aj_rej_q');
    assert.equal(msg.properties.headers['x-first-death-reason'], 'rejected');
    assert.equal(msg.fields.redelivered, false);
  }
  assert.equal(await messageCount(ch, 'aj_rej_q'), 0);
}

async function retryLoopCounts() {
  // The usual retry loop: a rejected message waits in a TTL queue and expires back. x-death
  // keeps one entry per {queue, reason}, counting, the latest first; x-first-death-* stay.
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertExchange('aj_retry_x', 'direct', { durable: false });
  await ch.assertQueue('aj_retry_work', { durable: false, deadLetterExchange: 'aj_retry_x', deadLetterRoutingKey: 'wait' });
  await ch.assertQueue('aj_retry_wait', {
    durable: false, messageTtl: 50, deadLetterExchange: 'aj_retry_x', deadLetterRoutingKey: 'work',
  });
  await ch.bindQueue('aj_retry_work', 'aj_retry_x', 'work');
  await ch.bindQueue('aj_retry_wait', 'aj_retry_x', 'wait');
  const deliveries = [];
  const third = signal();
  await ch.consume('aj_retry_work', (msg) => {
    deliveries.push(msg);
    if (deliveries.length < 3) ch.reject(msg, false);
    else {
      ch.ack(msg);
      third.resolve();
    }
  });
  ch.sendToQueue('aj_retry_work', Buffer.from('job'));
  await within(5000, () => `3 attempts, got ${deliveries.length}`, third.promise);
  const strip = (d) => ({ queue: d.queue, reason: d.reason, count: d.count });
  assert.equal(deliveries[0].properties.headers['x-death'], undefined);
  assert.deepEqual(xDeath(deliveries[1]).map(strip), [
    { queue: 'aj_retry_wait', reason: 'expired', count: 1 },
    { queue: 'aj_retry_work', reason: 'rejected', count: 1 },
  ]);
  const last = deliveries[2];
  assert.deepEqual(xDeath(last).map(strip), [
    { queue: 'aj_retry_wait', reason: 'expired', count: 2 },
    { queue: 'aj_retry_work', reason: 'rejected', count: 2 },
  ]);
  const h = last.properties.headers;
  assert.equal(h['x-first-death-queue'], 'aj_retry_work');
  assert.equal(h['x-first-death-reason'], 'rejected');
  assert.equal(h['x-first-death-exchange'], '');
  assert.equal(last.fields.routingKey, 'work');
  assert.equal(text(last), 'job');
  assert.equal(await messageCount(ch, 'aj_retry_work'), 0);
  assert.equal(await messageCount(ch, 'aj_retry_wait'), 0);
}

async function maxLengthDropHead() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await dlq(ch, 'aj_len_dlx', 'aj_len_dlq', ['aj_len_q']);
  await ch.assertQueue('aj_len_q', { durable: false, maxLength: 2, deadLetterExchange: 'aj_len_dlx' });
  const dead = await collector(ch, 'aj_len_dlq');
  const nacked = [];
  for (let i = 0; i < 5; i += 1) {
    ch.sendToQueue('aj_len_q', Buffer.from(`m${i}`), {}, (err) => {
      if (err) nacked.push(i);
    });
  }
  await ch.waitForConfirms();
  assert.deepEqual(nacked, [], 'drop-head confirms every publish');
  assert.equal(await messageCount(ch, 'aj_len_q'), 2);
  const got = await dead.next(3);
  assert.deepEqual(bodies(got), ['m0', 'm1', 'm2'], 'the oldest are dropped');
  for (const msg of got) {
    const [death] = xDeath(msg);
    assert.equal(death.reason, 'maxlen');
    assert.equal(death.queue, 'aj_len_q');
    assert.equal(msg.properties.headers['x-first-death-reason'], 'maxlen');
  }
  assert.deepEqual(bodies(await take(ch, 'aj_len_q', 2)), ['m3', 'm4']);
}

async function maxLengthRejectPublish() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_rp_q', { durable: false, maxLength: 2, overflow: 'reject-publish' });
  const outcome = {};
  const nacks = [];
  ch.on('nack', (f) => nacks.push(f.deliveryTag));
  for (const b of ['a', 'b', 'c']) {
    ch.sendToQueue('aj_rp_q', Buffer.from(b), {}, (err) => {
      outcome[b] = err ? 'nack' : 'ack';
    });
  }
  let waitErr = null;
  await within(5000, 'waitForConfirms', ch.waitForConfirms().catch((e) => {
    waitErr = e;
  }));
  assert.ok(waitErr, 'waitForConfirms rejects when a publish was nacked');
  assert.deepEqual(outcome, { a: 'ack', b: 'ack', c: 'nack' });
  assert.deepEqual(nacks, [3]);
  assert.equal(await messageCount(ch, 'aj_rp_q'), 2);
  // An unacked message does not count: with one taken there is room again.
  const a = await ch.get('aj_rp_q');
  assert.equal(text(a), 'a');
  const d = signal();
  ch.sendToQueue('aj_rp_q', Buffer.from('d'), {}, (err) => d.resolve(err));
  assert.equal(await within(5000, 'the confirm of d', d.promise), null);
  ch.ack(a);
  assert.deepEqual(bodies(await take(ch, 'aj_rp_q', 2)), ['b', 'd']);
}

async function priorities() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.assertQueue('aj_prio_q', { durable: false, maxPriority: 10 });
  for (const [body, priority] of [['p1a', 1], ['p5a', 5], ['p1b', 1], ['p9', 9], ['p5b', 5], ['none', undefined],
    ['p200', 200]]) {
    ch.sendToQueue('aj_prio_q', Buffer.from(body), { priority });
  }
  await ch.waitForConfirms();
  // 200 is above the maximum: it counts as 10.
  const top = await ch.get('aj_prio_q');
  assert.equal(text(top), 'p200');
  assert.equal(top.properties.priority, 200, 'the property itself is kept');
  ch.ack(top);
  // A requeued message keeps its priority: out again first, marked redelivered.
  const p9 = await ch.get('aj_prio_q');
  assert.equal(text(p9), 'p9');
  ch.nack(p9, false, true);
  await ch.prefetch(1);
  const got = await take(ch, 'aj_prio_q', 6);
  assert.deepEqual(got.map((m) => [text(m), m.fields.redelivered]), [['p9', true], ['p5a', false], ['p5b', false],
    ['p1a', false], ['p1b', false], ['none', false]]);
}

async function deliveryLimit() {
  const conn = await connect();
  const ch = await channel(conn);
  await dlq(ch, 'aj_lim_dlx', 'aj_lim_dlq', ['poison']);
  await ch.assertQueue('aj_lim_q', {
    durable: true,
    arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 2 },
    deadLetterExchange: 'aj_lim_dlx',
    deadLetterRoutingKey: 'poison',
  });
  const dead = await collector(ch, 'aj_lim_dlq');
  const attempts = [];
  await ch.consume('aj_lim_q', (msg) => {
    if (msg === null) return;
    attempts.push(msg.fields.redelivered);
    ch.nack(msg, false, true); // always fails, always requeued
  });
  ch.sendToQueue('aj_lim_q', Buffer.from('poison'), { persistent: true });
  const [msg] = await dead.next(1);
  assert.equal(text(msg), 'poison');
  assert.deepEqual(attempts, [false, true, true], 'limit 2: one delivery and two redeliveries');
  const [death] = xDeath(msg);
  assert.equal(death.reason, 'delivery_limit');
  assert.equal(death.queue, 'aj_lim_q');
  assert.equal(death.count, 1);
  assert.equal(msg.fields.routingKey, 'poison');
  assert.equal(msg.properties.headers['x-first-death-reason'], 'delivery_limit');
  assert.equal(await messageCount(ch, 'aj_lim_q'), 0);
  assert.equal(attempts.length, 3, 'not delivered again after it was dead-lettered');
}

async function deliveryCountHeader() {
  // Quorum queues tell a consumer how often a message failed before: x-delivery-count on
  // each redelivery (RabbitMQ 3.8 to 4.x; absent on the first delivery).
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertQueue('aj_dc_q', { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  const counts = [];
  const done = signal();
  await ch.consume('aj_dc_q', (msg) => {
    if (msg === null) return;
    counts.push(msg.properties.headers && msg.properties.headers['x-delivery-count']);
    if (counts.length < 3) ch.nack(msg, false, true);
    else {
      ch.ack(msg);
      done.resolve();
    }
  });
  ch.sendToQueue('aj_dc_q', Buffer.from('flaky'), { persistent: true });
  await within(5000, () => `3 deliveries, got ${counts.length}`, done.promise);
  assert.deepEqual(counts, [undefined, 1, 2]);
  assert.equal(await messageCount(ch, 'aj_dc_q'), 0);
}

// Collects the bodies and x-stream-offset headers a stream consumer gets.
async function streamReader(ch, queue, offset) {
  const got = [];
  await ch.consume(queue, (msg) => {
    if (msg === null) return;
    got.push([msg.properties.headers['x-stream-offset'], msg.content.toString()]);
    ch.ack(msg);
  }, { noAck: false, arguments: offset === undefined ? {} : { 'x-stream-offset': offset } });
  return got;
}

async function streamQueue() {
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.deleteQueue('aj_stream');
  await ch.assertQueue('aj_stream', { durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': '7D' } });
  for (let i = 0; i < 10; i += 1) ch.sendToQueue('aj_stream', Buffer.from(`s${i}`));
  await ch.waitForConfirms();
  await ch.prefetch(100);
  const first = await streamReader(ch, 'aj_stream', 'first');
  const fromSeven = await streamReader(ch, 'aj_stream', 7);
  const past = await streamReader(ch, 'aj_stream', { '!': 'timestamp', value: 1000 });
  const interval = await streamReader(ch, 'aj_stream', '1h');
  const next = await streamReader(ch, 'aj_stream');
  await eventually('every reader read the log', () => first.length === 10 && fromSeven.length === 3
    && past.length === 10 && interval.length === 10);
  assert.deepEqual(first, Array.from({ length: 10 }, (_, i) => [i, `s${i}`]));
  assert.deepEqual(fromSeven.map((m) => m[0]), [7, 8, 9]);
  assert.equal(next.length, 0, 'next: nothing until a new message');
  ch.sendToQueue('aj_stream', Buffer.from('s10'));
  await ch.waitForConfirms();
  await eventually('the new message reaches every reader', () => next.length === 1 && first.length === 11);
  assert.deepEqual(next, [[10, 's10']]);
  // Reading takes nothing away: a new reader from the start still gets everything.
  const again = await streamReader(ch, 'aj_stream', 'first');
  await eventually('a second reader from first', () => again.length === 11);
  // RabbitMQ's rules: a stream consumer needs a prefetch and manual acks; no basic.get.
  await expectChannelClose(conn, 406, 'consume without a prefetch', async (c) => {
    await c.consume('aj_stream', () => {}, { noAck: false });
  });
  // Automatic acks and basic.get: RabbitMQ closes the whole connection (540 NOT_IMPLEMENTED).
  const refused = async (what, fn) => {
    const other = await connect();
    const closed = new Promise((resolve) => other.on('close', resolve));
    const och = await other.createChannel();
    och.on('error', () => {});
    await och.prefetch(10);
    await fn(och).catch(() => {});
    await within(5000, `${what}: the connection was not closed`, closed);
    assert.equal(other.closedBy && other.closedBy.code, 540, `${what}: ${other.closedBy && other.closedBy.message}`);
  };
  await refused('a noAck stream consumer', (c) => c.consume('aj_stream', () => {}, { noAck: true }));
  await refused('basic.get from a stream', (c) => c.get('aj_stream'));
  await expectChannelClose(conn, 406, 'an exclusive stream', async (c) => {
    await c.assertQueue('aj_stream_x', { exclusive: true, arguments: { 'x-queue-type': 'stream' } });
  });
}

async function kafkaTopicAsStream() {
  // Not a RabbitMQ behaviour: a Kafka topic read as a stream queue (issue 15).
  const { Kafka, logLevel } = require('kafkajs');
  const kafka = new Kafka({ brokers: [`127.0.0.1:${process.env.KAFKA_PORT}`], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const topic = `aj-kafka-stream-${Date.now()}`;
  try {
    await producer.send({ topic, messages: ['k0', 'k1', 'k2'].map((v) => ({ key: v, value: v })) });
  } finally {
    await producer.disconnect();
  }
  const conn = await connect();
  const ch = await channel(conn);
  await ch.assertQueue(topic, { durable: true, arguments: { 'x-queue-type': 'stream' } });
  await ch.prefetch(10);
  const got = await streamReader(ch, topic, 'first');
  await eventually('the three Kafka records', () => got.length === 3);
  assert.deepEqual(got, [[0, 'k0'], [1, 'k1'], [2, 'k2']]);
}

async function delayedExchange() {
  // Not a RabbitMQ 3.10.8 behaviour here: the delayed-message plugin is not in Debian.
  const conn = await connect();
  const ch = await channel(conn, { confirm: true });
  await ch.deleteExchange('aj_delayed');
  await ch.deleteQueue('aj_delayed_q');
  await ch.assertExchange('aj_delayed', 'x-delayed-message', { durable: true, arguments: { 'x-delayed-type': 'direct' } });
  await ch.assertQueue('aj_delayed_q', { durable: true });
  await ch.bindQueue('aj_delayed_q', 'aj_delayed', 'k');
  const delays = [900, 300, 600, 0, 1200, 150, 450];
  const got = [];
  const start = Date.now();
  await ch.consume('aj_delayed_q', (msg) => {
    if (msg === null) return;
    got.push([Number(msg.content.toString()), Date.now() - start]);
    ch.ack(msg);
  });
  for (const d of delays) ch.publish('aj_delayed', 'k', Buffer.from(String(d)), { headers: { 'x-delay': d }, persistent: true });
  await ch.waitForConfirms();
  // While they wait, /metrics counts them as scheduled (the one with x-delay 0 is not).
  if (process.env.ADMIN_URL) {
    const text = await (await fetch(`${process.env.ADMIN_URL}/metrics`)).text();
    const m = text.match(/sluice_queue_messages_scheduled\{queue="aj_delayed_q"\} (\d+)/);
    assert.ok(m && Number(m[1]) >= 4, `scheduled gauge: ${m && m[0]}`);
  }
  await eventually('every delayed message', () => got.length === delays.length, 5000);
  assert.deepEqual(got.map((g) => g[0]), [...delays].sort((a, b) => a - b), 'delivered in due order');
  for (const [d, at] of got) {
    assert.ok(at >= d, `a message delayed ${d} ms came after ${at} ms`);
    assert.ok(at < d + 500, `a message delayed ${d} ms came only after ${at} ms`);
  }
  // Without the type argument the declare is refused, as the plugin does.
  await expectChannelClose(conn, 406, 'x-delayed-message without x-delayed-type', async (c) => {
    await c.assertExchange('aj_delayed_bad', 'x-delayed-message');
  });
}

async function retryBackoff() {
  // Sluice's x-retry-backoff (issue 16): a nacked message comes back after the backoff's
  // delay, and after x-retry-max retries it is dead-lettered (reason delivery_limit).
  const conn = await connect();
  const ch = await channel(conn);
  await ch.deleteQueue('aj_retry');
  await ch.deleteQueue('aj_retry_dlq');
  await ch.assertExchange('aj_retry_dlx', 'fanout');
  await ch.assertQueue('aj_retry_dlq');
  await ch.bindQueue('aj_retry_dlq', 'aj_retry_dlx', '');
  await ch.assertQueue('aj_retry', {
    arguments: { 'x-retry-backoff': 'exponential:200ms,2,2s', 'x-retry-max': 3, 'x-dead-letter-exchange': 'aj_retry_dlx' },
  });
  const times = [];
  await ch.consume('aj_retry', (msg) => {
    if (msg === null) return;
    times.push(Date.now());
    ch.nack(msg, false, true);
  });
  ch.sendToQueue('aj_retry', Buffer.from('flaky'));
  const dead = await take(ch, 'aj_retry_dlq', 1, { ms: 10000 });
  assert.equal(times.length, 4, 'the first delivery and 3 retries');
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  [200, 400, 800].forEach((want, i) => {
    assert.ok(Math.abs(gaps[i] - want) <= want * 0.1 + 30, `retry ${i + 1} after ${gaps[i]} ms, want ${want} ± 10%`);
  });
  const death = dead[0].properties.headers['x-death'][0];
  assert.equal(death.reason, 'delivery_limit');
  assert.equal(death.queue, 'aj_retry');
  if (process.env.ADMIN_URL) {
    const text = await (await fetch(`${process.env.ADMIN_URL}/metrics`)).text();
    assert.match(text, /sluice_queue_dead_lettered_total\{queue="aj_retry",reason="delivery_limit"\} 1\b/);
  }
}

(async () => {
  const started = Date.now();
  const hang = setTimeout(() => {
    console.log('the suite did not finish within 120 s');
    process.exit(1);
  }, 120000);
  await cleanSlate();
  await check('hello world (tutorial 1): sendToQueue, consume with noAck', helloWorld);
  await check('work queue (tutorial 2): prefetch 1, manual acks, a slow worker gets fewer, each task once', workQueue);
  await check('publish/subscribe (tutorial 3): fanout to 2 exclusive server-named queues', fanout);
  await check('routing (tutorial 4): direct exchange by severity', directRouting);
  await check('topics (tutorial 5): * and # bindings, a message matching twice comes once', topics);
  await check('RPC (tutorial 6): reply_to, correlation_id, exclusive server-named reply queue', rpc);
  await check('publisher confirms: ConfirmChannel callbacks once each, waitForConfirms', publisherConfirms);
  await check('nack(multiple)/reject with requeue: redelivered, in their original order', nackRequeue);
  await check('basic.get: get-empty, message count, ack and noAck', basicGet);
  await check('queue delete cancels a consumer: amqplib calls it with null; the channel stays open',
    consumerCancelOnDelete);
  await check('headers exchange: x-match all and any', headersExchange);
  await check('alternate exchange takes unroutable messages; mandatory returned only with no route',
    alternateExchange);
  await check('mandatory unroutable publish: returned (312 NO_ROUTE) before its confirm', mandatoryReturned);
  await check('3 consumers, one leaving with unacked messages: each of 300 processed exactly once',
    threeConsumersExactlyOnce);
  await check('all 14 basic properties and every field-table type amqplib encodes round-trip exactly',
    propertiesRoundTrip);
  await check('404: passive declare of a missing queue, bind and publish to a missing exchange close only that channel',
    notFound);
  await check('checkExchange (passive exchange.declare): declare-ok if it exists, else 404 on the channel',
    checkExchange);
  await check('queue.delete and exchange.delete of a missing name are delete-ok, as in RabbitMQ', deleteMissing);
  await check('406: redeclare with other arguments, durability or exchange type', preconditionFailed);
  await check('TTL + DLX: x-message-ttl and expiration dead-letter with x-death and x-first-death-*', ttlIntoDlx);
  await check('an expired message is never delivered; a live one keeps its expiration', expiredNeverDelivered);
  await check('reject/nack without requeue: dead-lettered (rejected) with the original routing key', rejectedIntoDlx);
  await check('retry loop through a TTL queue: x-death counts per queue and reason, latest first', retryLoopCounts);
  await check('x-max-length drop-head: the oldest are dead-lettered (maxlen)', maxLengthDropHead);
  await check('x-max-length reject-publish: the publish over the limit is nacked', maxLengthRejectPublish);
  await check('x-max-priority: higher first, FIFO within a priority, requeued keep theirs', priorities);
  await check('x-delivery-limit: nacked with requeue too often, dead-lettered (delivery_limit)', deliveryLimit);
  await check('quorum queue redeliveries carry x-delivery-count', deliveryCountHeader);
  await check('stream queue: readers from first, an offset, a timestamp, an interval and next; nothing taken away',
    streamQueue);
  if (process.env.KAFKA_PORT) {
    await check('a Kafka topic (kafkajs producer) read as a stream queue', kafkaTopicAsStream);
    await check('x-delayed-message exchange: a spread of x-delay values delivered in due order, never early',
      delayedExchange);
    await check('x-retry-backoff: retries after 200, 400, 800 ms (±10%), then dead-lettered (delivery_limit)',
      retryBackoff);
  }
  clearTimeout(hang);
  console.log(`${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  process.exit(failed || !passed ? 1 : 0);
})();
