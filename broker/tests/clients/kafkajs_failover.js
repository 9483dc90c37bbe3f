// KafkaJS 2.2.4 across a leader kill (test_replication.py's test_kafkajs_clients_ride_a_leader_kill).
//
//   NODE_PATH=<node_modules with kafkajs> node kafkajs_failover.js BOOTSTRAP TOPIC PARTITIONS
//
// An idempotent acks=all producer sends message n of partition p (value "p:n") to every partition in turn, and a
// consumer-group member reads the topic from the beginning. The script prints "ready" once both run and the first
// sends are acknowledged, then "progress N" (N acknowledged so far) every 200 ms; the test kills and restarts a
// leader meanwhile and writes "stop" to stdin. The script stops sending, waits (at most 120 s) until the member has
// consumed every acknowledged message, and prints one JSON line: {sent, acknowledged: [[p, n, offset]],
// failed: [[p, n, error]] (a send that threw, or an answer that lacked the partition), consumed: [[p, n, offset]],
// errors: [text]}.
'use strict'

const readline = require('readline')
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic, partitionText] = process.argv.slice(2)
const partitions = Number(partitionText)
const errors = []
const kafka = new Kafka({
  clientId: 'sluice-replication',
  brokers: bootstrap.split(','),
  connectionTimeout: 5000,
  requestTimeout: 30000,
  retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 60 },
  logLevel: logLevel.NOTHING
})

async function main () {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  const consumer = kafka.consumer({ groupId: 'repl-kafkajs-group', maxWaitTimeInMs: 100 })
  const acknowledged = []
  const failed = []
  const consumed = []
  const seen = new Set()
  let stopping = false
  readline.createInterface({ input: process.stdin }).on('line', line => { if (line.trim() === 'stop') stopping = true })
  consumer.on(consumer.events.CRASH, event => errors.push(`consumer crash: ${event.payload.error}`))

  await producer.connect()
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const number = Number(message.value.toString().split(':')[1])
      consumed.push([partition, number, Number(message.offset)])
      seen.add(`${partition}:${number}`)
    }
  })

  let sent = 0
  const next = new Array(partitions).fill(0)
  let announced = false
  let progress = null
  while (!stopping) {
    const numbers = next.map(n => n)
    for (let partition = 0; partition < partitions; partition++) next[partition]++
    sent += partitions
    // One send per partition (concurrently): a send spanning partitions led by several brokers can lose a
    // partition when its leader moves to a broker that already answered (KafkaJS 2.2.4's sendMessages keeps one
    // response per broker and re-sends only to brokers without one), resolving without that partition's answer.
    await Promise.all(numbers.map(async (number, partition) => {
      try {
        const answers = await producer.send({ topic, acks: -1, messages: [{ partition, value: `${partition}:${number}` }] })
        const answer = answers.find(each => each.partition === partition)
        if (answer === undefined || answer.errorCode !== 0) {
          failed.push([partition, number, `answer ${JSON.stringify(answers)}`])
        } else {
          acknowledged.push([partition, number, Number(answer.baseOffset)])
        }
      } catch (error) {
        errors.push(`send: ${error.name}: ${error.message}`)
        failed.push([partition, number, `${error.name}: ${error.message}`])
      }
    }))
    if (!announced && acknowledged.length >= 10 * partitions) {
      announced = true
      console.log('ready')
      progress = setInterval(() => console.log(`progress ${acknowledged.length}`), 200)
    }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  clearInterval(progress)
  const deadline = Date.now() + 120000
  while (Date.now() < deadline && !acknowledged.every(([p, n]) => seen.has(`${p}:${n}`))) {
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  await producer.disconnect()
  await consumer.disconnect()
  console.log(JSON.stringify({ sent, acknowledged, failed, consumed, errors }))
}

main().then(() => process.exit(0), error => {
  console.error(error)
  process.exit(1)
})
