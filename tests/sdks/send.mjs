// Sends one person's identify, track, group and page through a real Node SDK to HOST, then flushes.
// Usage: node send.mjs segment|rudderstack HOST WRITE_KEY USER_ID
import { Analytics } from '@segment/analytics-node'
import RudderAnalytics from '@rudderstack/rudder-sdk-node'

const [sdk, host, writeKey, userId] = process.argv.slice(2)
const calls = [
  ['identify', { userId, traits: { email: `${userId}@example.com`, plan: 'pro' } }],
  ['track', { userId, event: 'Report Exported', properties: { rows: 3 } }],
  ['group', { userId, groupId: `org-${userId}`, traits: { name: `Org of ${userId}` } }],
  ['page', { userId, name: 'Pricing', properties: { path: '/pricing' } }],
]

if (sdk === 'segment') {
  const analytics = new Analytics({ writeKey, host, maxRetries: 0, flushAt: 10 })
  let failed = null
  analytics.on('error', (error) => { failed = error })
  for (const [method, message] of calls) analytics[method](message)
  await analytics.closeAndFlush({ timeout: 10000 })
  if (failed) { console.error('analytics-node failed:', failed); process.exit(1) }
} else if (sdk === 'rudderstack') {
  const client = new RudderAnalytics(writeKey, { dataPlaneUrl: host, flushAt: 10, retryCount: 0, gzip: true })
  for (const [method, message] of calls) client[method](message)
  await new Promise((resolve, reject) => client.flush((error) => (error ? reject(error) : resolve())))
} else {
  console.error(`unknown SDK ${sdk}`)
  process.exit(2)
}
