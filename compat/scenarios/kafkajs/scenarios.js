// KafkaJS 2.2.4 (pure JavaScript, its own protocol code) against Sluice: one scenario per feature of issue 5.
//
// The same markers and output as compat/scenarios/python/harness.py: `basic` scenarios form the fast set (CI),
// `pending` ones wait for a feature (run by the full set only; a failure counts as skipped), `unsupported` ones are
// never run. KafkaJS has no manual partition assignment: every consumer joins a group, so the scenarios that
// consume read through a consumer group; the produce-only ones check the produce path through ListOffsets.
// The last line is `kafkajs: N passed, N failed, N skipped`; the exit status is 1 if a required scenario failed.
'use strict'

const assert = require('assert')
const crypto = require('crypto')
const { Kafka, logLevel, CompressionTypes, CompressionCodecs, ConfigResourceTypes } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const lz4 = require('lz4js')
const { ZstdCodec } = require('zstd-codec')

const TIMEOUT_MS = 30000
const RECORD_COUNT = 300
// The same fixed past time as compat/scenarios/python/model.py: 2026-01-01T00:00:00Z.
const BASE_TIMESTAMP_MS = 1767225600000
const STEP_MS = 1000

// KafkaJS ships gzip only; snappy, lz4 and zstd are plug-ins. These are pure JavaScript/WebAssembly ones, so
// nothing is compiled or downloaded at install time.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  async compress (encoder) { return Buffer.from(lz4.compress(encoder.buffer)) },
  async decompress (buffer) { return Buffer.from(lz4.decompress(buffer)) }
})
let zstdSimple = null
const zstdReady = new Promise(resolve => ZstdCodec.run(zstd => { zstdSimple = new zstd.Simple(); resolve() }))
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress (encoder) { await zstdReady; return Buffer.from(zstdSimple.compress(encoder.buffer)) },
  async decompress (buffer) { await zstdReady; return Buffer.from(zstdSimple.decompress(buffer)) }
})
const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD
}

const scenarios = []
function scenario (name, markers, run) { scenarios.push({ name, run, ...markers }) }
function uniqueTopic (prefix) { return `compat-${prefix}-${crypto.randomBytes(5).toString('hex')}` }

// Record `index`, as in model.py: no key for every 11th (unless the value is null too), a null value for every
// 7th, two headers (KafkaJS cannot send a null header value: an empty one instead), a CreateTime timestamp.
function record (index, partitions) {
  const key = index % 11 === 0 && index % 7 !== 0 ? null : Buffer.from(`key-${index}`)
  const value = index % 7 === 0
    ? null
    : Buffer.concat([Buffer.from(`value-${index}|` + 'sluice-compat-'.repeat(index % 13)),
      Buffer.from([index % 256, 0, 255])])
  return {
    partition: index % partitions,
    key,
    value,
    headers: { index: Buffer.from(`${index}`), 'null-header': Buffer.alloc(0) },
    timestamp: `${BASE_TIMESTAMP_MS + index * STEP_MS}`
  }
}
function records (partitions, count = RECORD_COUNT) {
  return Array.from({ length: count }, (_, index) => record(index, partitions))
}
function countByPartition (partitions, count = RECORD_COUNT) {
  const counts = Array(partitions).fill(0)
  for (let index = 0; index < count; index++) counts[index % partitions]++
  return counts
}

async function withAdmin (kafka, body) {
  const admin = kafka.admin()
  await admin.connect()
  try { return await body(admin) } finally { await admin.disconnect() }
}

async function createTopic (admin, topic, partitions, configEntries = []) {
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries }],
    waitForLeaders: true,
    timeout: TIMEOUT_MS
  })
  assert.strictEqual(created, true, `createTopics(${topic}) returned ${created}`)
}

async function produce (kafka, topic, partitions, { codec = 'none', count = RECORD_COUNT, ...settings } = {}) {
  const producer = kafka.producer({ allowAutoTopicCreation: false, ...settings })
  await producer.connect()
  try {
    const result = await producer.send({ topic, acks: -1, compression: CODECS[codec], messages: records(partitions, count) })
    for (const entry of result) assert.strictEqual(entry.errorCode, 0, JSON.stringify(entry))
  } finally {
    await producer.disconnect()
  }
}

// The high watermarks prove every record landed in its partition (offsets dense from 0).
async function checkOffsets (admin, topic, partitions, count = RECORD_COUNT) {
  const offsets = await admin.fetchTopicOffsets(topic)
  const got = offsets.sort((a, b) => a.partition - b.partition).map(entry => [entry.low, entry.high].map(Number))
  const want = countByPartition(partitions, count).map(high => [0, high])
  assert.deepStrictEqual(got, want, `topic ${topic}: [low, high] per partition`)
}

// Reads `count` records through a group consumer and checks them byte for byte.
async function consumeAndCheck (kafka, topic, partitions, count = RECORD_COUNT) {
  const consumer = kafka.consumer({ groupId: uniqueTopic('group'), maxWaitTimeInMs: 200 })
  await consumer.connect()
  const consumed = Array.from({ length: partitions }, () => [])
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    let total = 0
    let done
    const finished = new Promise(resolve => { done = resolve })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        consumed[partition].push(message)
        if (++total === count) done()
      }
    })
    await withTimeout(finished, TIMEOUT_MS, `${count} records from ${topic}`)
  } finally {
    await consumer.disconnect()
  }
  const expected = Array.from({ length: partitions }, () => [])
  for (const item of records(partitions, count)) expected[item.partition].push(item)
  for (let partition = 0; partition < partitions; partition++) {
    assert.strictEqual(consumed[partition].length, expected[partition].length, `partition ${partition}: count`)
    consumed[partition].forEach((message, position) => {
      const want = expected[partition][position]
      const where = `partition ${partition} offset ${message.offset}`
      assert.strictEqual(Number(message.offset), position, `${where}: offset`)
      assert.deepStrictEqual(message.key, want.key, `${where}: key`)
      assert.deepStrictEqual(message.value, want.value, `${where}: value`)
      assert.strictEqual(message.timestamp, want.timestamp, `${where}: timestamp`)
      assert.deepStrictEqual(message.headers, want.headers, `${where}: headers`)
    })
  }
}

function withTimeout (promise, timeoutMs, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

scenario('metadata', { basic: true }, async (kafka, bootstrap) => withAdmin(kafka, async admin => {
  const topic = uniqueTopic('meta')
  await createTopic(admin, topic, 3)
  const cluster = await admin.describeCluster()
  // One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
  assert.strictEqual(cluster.brokers.length, bootstrap.split(',').length, JSON.stringify(cluster))
  const brokerIds = cluster.brokers.map(broker => broker.nodeId)
  assert.ok(brokerIds.includes(cluster.controller), JSON.stringify(cluster))
  assert.ok((await admin.listTopics()).includes(topic))
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
  assert.deepStrictEqual(topics[0].partitions.map(p => p.partitionId).sort(), [0, 1, 2])
  for (const partition of topics[0].partitions) {
    assert.ok(brokerIds.includes(partition.leader), JSON.stringify(partition))
    assert.deepStrictEqual(partition.replicas, [partition.leader], JSON.stringify(partition))
    assert.deepStrictEqual(partition.isr, [partition.leader], JSON.stringify(partition))
  }
}))

for (const codec of Object.keys(CODECS)) {
  scenario(`produce-${codec}`, { basic: codec === 'none' || codec === 'gzip' }, async kafka => {
    const topic = uniqueTopic(`produce-${codec}`)
    await withAdmin(kafka, admin => createTopic(admin, topic, 3))
    await produce(kafka, topic, 3, { codec })
    await withAdmin(kafka, admin => checkOffsets(admin, topic, 3))
  })
  scenario(`produce-consume-${codec}`, {}, async kafka => {
    const topic = uniqueTopic(`codec-${codec}`)
    await withAdmin(kafka, admin => createTopic(admin, topic, 3))
    await produce(kafka, topic, 3, { codec })
    await consumeAndCheck(kafka, topic, 3)
  })
}

scenario('list-offsets-by-time', {}, async kafka => withAdmin(kafka, async admin => {
  const topic = uniqueTopic('time')
  await createTopic(admin, topic, 2)
  await produce(kafka, topic, 2)
  // Record 151's timestamp: partition 0's first record at or after it is its 76th, partition 1's its 75th.
  const found = await admin.fetchTopicOffsetsByTimestamp(topic, BASE_TIMESTAMP_MS + 151 * STEP_MS)
  const offsets = Object.fromEntries(found.map(entry => [entry.partition, Number(entry.offset)]))
  assert.deepStrictEqual(offsets, { 0: 76, 1: 75 })
}))

scenario('admin-topics', {}, async kafka => withAdmin(kafka, async admin => {
  const topic = uniqueTopic('admin')
  await createTopic(admin, topic, 4, [{ name: 'retention.ms', value: '3600000' }])
  const again = await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], timeout: TIMEOUT_MS })
  assert.strictEqual(again, false, 'creating an existing topic reported a creation')
  await admin.deleteTopics({ topics: [topic], timeout: TIMEOUT_MS })
  const deadline = Date.now() + TIMEOUT_MS
  while ((await admin.listTopics()).includes(topic)) {
    assert.ok(Date.now() < deadline, 'the deleted topic is still listed')
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}))

scenario('admin-configs', {}, async kafka => withAdmin(kafka, async admin => {
  const topic = uniqueTopic('configs')
  await createTopic(admin, topic, 1, [{ name: 'retention.ms', value: '3600000' }])
  const describe = async () => {
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }]
    })
    assert.strictEqual(resources[0].errorCode, 0, JSON.stringify(resources[0]))
    return Object.fromEntries(resources[0].configEntries.map(entry => [entry.configName, entry.configValue]))
  }
  let entries = await describe()
  assert.strictEqual(entries['retention.ms'], '3600000')
  assert.ok('segment.bytes' in entries && 'cleanup.policy' in entries, Object.keys(entries).join(','))
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '7200000' }] }]
  })
  entries = await describe()
  assert.strictEqual(entries['retention.ms'], '7200000')
}))

scenario('admin-create-partitions', {}, async kafka => {
  const topic = uniqueTopic('partitions')
  await withAdmin(kafka, async admin => {
    await createTopic(admin, topic, 2)
    await admin.createPartitions({ topicPartitions: [{ topic, count: 5 }], timeout: TIMEOUT_MS })
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.strictEqual(topics[0].partitions.length, 5)
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] }),
      error => /partition/i.test(error.message) || error.type === 'INVALID_PARTITIONS')
  })
  await produce(kafka, topic, 5, { count: 50 })
  await withAdmin(kafka, admin => checkOffsets(admin, topic, 5, 50))
})

scenario('admin-delete-records', {}, async kafka => withAdmin(kafka, async admin => {
  const topic = uniqueTopic('delete-records')
  await createTopic(admin, topic, 1)
  await produce(kafka, topic, 1, { count: 20 })
  // KafkaJS looks the leader up in its cached metadata before it loads any (a client quirk, the same against Kafka).
  await admin.fetchTopicMetadata({ topics: [topic] })
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '5' }] })
  const [offsets] = await admin.fetchTopicOffsets(topic)
  assert.deepStrictEqual([Number(offsets.low), Number(offsets.high)], [5, 20])
}))

scenario('idempotent-producer', {}, async kafka => {
  const topic = uniqueTopic('idempotent')
  await withAdmin(kafka, admin => createTopic(admin, topic, 3))
  await produce(kafka, topic, 3, { codec: 'lz4', idempotent: true, maxInFlightRequests: 1 })
  await withAdmin(kafka, admin => checkOffsets(admin, topic, 3))
})

scenario('consumer-group-commit', {}, async kafka => {
  const topic = uniqueTopic('group')
  await withAdmin(kafka, admin => createTopic(admin, topic, 3))
  await produce(kafka, topic, 3)
  const groupId = uniqueTopic('group-id')
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 200 })
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    let total = 0
    let done
    const finished = new Promise(resolve => { done = resolve })
    await consumer.run({ autoCommit: true, eachMessage: async () => { if (++total === RECORD_COUNT) done() } })
    await withTimeout(finished, TIMEOUT_MS, `${RECORD_COUNT} records`)
  } finally {
    await consumer.disconnect() // commits what was consumed
  }
  await withAdmin(kafka, async admin => {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] })
    const got = committed.partitions.sort((a, b) => a.partition - b.partition).map(entry => Number(entry.offset))
    assert.deepStrictEqual(got, countByPartition(3))
    const { groups } = await admin.listGroups()
    assert.ok(groups.some(group => group.groupId === groupId), JSON.stringify(groups))
  })
})

scenario('transactions', { unsupported: 'transactions' }, async () => { throw new Error('not run') })

async function main () {
  const argv = process.argv.slice(2)
  const option = name => { const at = argv.indexOf(name); return at >= 0 ? argv[at + 1] : undefined }
  const bootstrap = option('--bootstrap') || '127.0.0.1:9092'
  const fast = argv.includes('--fast')
  const only = option('--only')
  const scenarioTimeoutMs = Number(option('--scenario-timeout') || 90) * 1000
  console.log(`kafkajs ${require('kafkajs/package.json').version}`)
  let passed = 0; let failed = 0; let skipped = 0
  for (const entry of scenarios) {
    if ((only && !entry.name.includes(only)) || (fast && !entry.basic)) continue
    if (entry.unsupported) { console.log(`SKIP kafkajs ${entry.name}: not supported: ${entry.unsupported}`); skipped++; continue }
    const kafka = new Kafka({
      clientId: 'sluice-compat',
      brokers: bootstrap.split(','),
      logLevel: logLevel.NOTHING,
      connectionTimeout: 5000,
      requestTimeout: TIMEOUT_MS,
      retry: { retries: entry.pending ? 2 : 5 }
    })
    const started = Date.now()
    const timeoutMs = entry.pending ? Math.min(scenarioTimeoutMs, 45000) : scenarioTimeoutMs
    try {
      await withTimeout(entry.run(kafka, bootstrap), timeoutMs, `scenario ${entry.name}`)
      passed++
      const note = entry.pending ? ` (marked pending ${entry.pending} but passes: delete the marker)` : ''
      console.log(`PASS kafkajs ${entry.name} (${((Date.now() - started) / 1000).toFixed(2)} s)${note}`)
    } catch (error) {
      const line = String(error && error.message ? `${error.name}: ${error.message}` : error).split('\n')[0].slice(0, 300)
      if (entry.pending) {
        skipped++
        console.log(`SKIP kafkajs ${entry.name}: pending ${entry.pending} (${line})`)
      } else {
        failed++
        console.log(`FAIL kafkajs ${entry.name} (${((Date.now() - started) / 1000).toFixed(2)} s): ${line}`)
        console.log(error && error.stack)
      }
    }
  }
  console.log(`kafkajs: ${passed} passed, ${failed} failed, ${skipped} skipped`)
  process.exit(failed ? 1 : 0)
}

main().catch(error => { console.log(`kafkajs: harness error ${error && error.stack}`); process.exit(1) })
