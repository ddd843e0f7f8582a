// Drives the real browser SDKs (Segment analytics.js 2.0, RudderStack JS v3) in headless Chromium against a relay and
// prints one JSON document describing what each run sent and what the relay answered.
//
// Usage: node tests/browser/run.mjs <relayUrl> <writeKey> [--page-port N]
//
// The pages come from a static server on 127.0.0.1 (another origin than the relay, so CORS is exercised) and load the
// SDK bundles from node_modules, never from a CDN; Chromium resolves no host but 127.0.0.1, and any request elsewhere is
// reported in `outsideRequests`. Exits non-zero only when it cannot run at all (browser or page failed to start).
import http from 'node:http'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import puppeteer from 'puppeteer-core'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const MODULES = path.join(HERE, 'node_modules')
const AJS_DIR = path.join(MODULES, '@segment/analytics-next/dist/umd')
const RSA_FILE = path.join(MODULES, '@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

// Bounds: five sequential runs must finish well under two minutes even when nothing arrives.
const READY_TIMEOUT_MS = 8000 // page load plus SDK ready
const DELIVERY_TIMEOUT_MS = 10000 // every expected event answered by the relay
const UNLOAD_TIMEOUT_MS = 2000 // what leaving the page sends (beacons, keepalive flushes)
const QUIET_MS = 400 // no relay traffic for this long means the SDK is done
const METRICS_FLUSH_MS = 250 // analytics.js metrics timer (default 30 s) so `/m` goes out within the run
const WATCHDOG_MS = 110000

// Each run makes the same 8 calls, so the relay should receive 8 events (page, identify, alias, identify, page, track,
// group, page), whatever the batching.
const EXPECTED_EVENTS = 8

const RUNS = [
  { name: 'ajs-default', sdk: 'ajs', metrics: true },
  { name: 'ajs-batching', sdk: 'ajs', batching: true },
  { name: 'rs-xhr', sdk: 'rs' },
  { name: 'rs-batch', sdk: 'rs', batch: true },
  { name: 'rs-beacon', sdk: 'rs', beacon: true },
]

function usage(message) {
  process.stderr.write(`${message}\nusage: node tests/browser/run.mjs <relayUrl> <writeKey> [--page-port N]\n`)
  process.exit(2)
}

function parseArgs(argv) {
  const positional = []
  let pagePort = 0
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--page-port') pagePort = Number(argv[++i])
    else if (argv[i].startsWith('--page-port=')) pagePort = Number(argv[i].slice('--page-port='.length))
    else positional.push(argv[i])
  }
  if (positional.length !== 2) usage('expected a relay URL and a write key')
  if (!Number.isInteger(pagePort) || pagePort < 0 || pagePort > 65535) usage('--page-port must be a port number')
  let relay
  try {
    relay = new URL(positional[0])
  } catch {
    usage(`not a URL: ${positional[0]}`)
  }
  return { relay, writeKey: positional[1], pagePort }
}

// The call sequence a web page makes, identical for both SDKs (their public APIs share these signatures). Runs in the
// page; `anonymousId` reads the SDK's current anonymousId. Alias comes before identify(userId) because analytics.js
// overwrites an alias's userId with the stored one once the user is identified.
const CALLS = `
function runCalls(a, P, anonymousId) {
  var ids = []
  a.page('Landing')
  a.identify({ email: P + '-visitor@example.com' }) // traits only: no userId, sent with the anonymousId
  a.alias(P + '-user') // still anonymous: previousId is the anonymousId
  a.identify(P + '-user', { email: P + '-user@example.com', name: 'Ada ' + P, plan: 'pro' })
  a.page('Docs')
  a.track('Report Exported', { rows: 3 })
  a.group(P + '-org', { name: 'Org ' + P, plan: 'enterprise' })
  ids.push(anonymousId())
  a.reset()
  a.page('After Reset')
  ids.push(anonymousId())
  return ids
}
function finish(run) {
  try { window.__result = { anonymousIds: run() } } catch (e) { window.__result = { error: String(e && e.stack || e) } }
}`

function ajsPage(run, relay, writeKey) {
  const segmentio = { apiHost: `${relay.host}/v1`, protocol: relay.protocol.replace(':', '') } // apiHost takes no scheme
  if (run.batching) segmentio.deliveryStrategy = { strategy: 'batching', config: { size: 3, timeout: 300 } }
  const config = {
    name: run.name,
    settings: {
      writeKey,
      // Inline settings: no fetch of cdn.segment.com/v1/projects/<key>/settings. Only Segment.io, so no extra chunks.
      cdnSettings: {
        integrations: { 'Segment.io': { apiKey: writeKey } },
        // Metrics follow apiHost/protocol, so when on they go to the relay's /v1/m.
        metrics: run.metrics ? { flushTimer: METRICS_FLUSH_MS } : { sampleRate: 0 },
      },
    },
    options: { integrations: { 'Segment.io': segmentio }, useQueryString: false },
  }
  return html(`
<script>window.analytics = { _cdn: location.origin }</script><!-- code-split chunks from this origin, not the CDN -->
<script src="/analytics-next/bundles/index.js"></script>
<script>${CALLS}
var config = ${json(config)}
AnalyticsNext.AnalyticsBrowser.load(config.settings, config.options).then(function (loaded) {
  var analytics = loaded[0]
  finish(function () { return runCalls(analytics, config.name, function () { return analytics.user().anonymousId() }) })
}, function (e) { window.__result = { error: 'load failed: ' + e } })
</script>`)
}

function rsPage(run, relay, writeKey) {
  const options = { polyfillIfRequired: false } // never polyfill-fastly.io
  if (run.batch) options.queueOptions = { batch: { enabled: true, maxItems: 3, flushInterval: 300 } }
  if (run.beacon) Object.assign(options, { useBeacon: true, beaconQueueOptions: { maxItems: 3, flushQueueInterval: 300 } })
  // Inline source config: no request to api.rudderstack.com; no destinations, so no integration SDK from the CDN.
  const sourceConfig = { source: { id: 'browser-test', config: {}, destinations: [] } }
  const config = { name: run.name, writeKey, dataPlane: relay.origin, options, sourceConfig }
  return html(`
<script src="/rsa.js"></script>
<script>${CALLS}
var config = ${json(config)}
config.options.getSourceConfig = function () { return config.sourceConfig }
var analytics = new window.rudderanalytics.RudderAnalytics() // becomes window.rudderanalytics
analytics.load(config.writeKey, config.dataPlane, config.options)
analytics.ready(function () {
  finish(function () { return runCalls(analytics, config.name, function () { return analytics.getAnonymousId() }) })
})
</script>`)
}

function json(value) {
  return JSON.stringify(value).replace(/</g, '\\u003c')
}

function html(body) {
  // The empty icon keeps Chromium from asking for /favicon.ico.
  return `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>relay browser test</title></head><body>${body}</body></html>`
}

function startServer(pages, port) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1')
    const send = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
      res.end(body)
    }
    const page = url.pathname.match(/^\/([\w-]+)\.html$/)
    if (page && pages.has(page[1])) return send(200, 'text/html; charset=utf-8', pages.get(page[1]))
    if (url.pathname === '/rsa.js') return send(200, 'text/javascript', fs.readFileSync(RSA_FILE))
    const bundle = url.pathname.match(/^\/analytics-next\/bundles\/([\w.-]+\.js)$/)
    if (bundle && fs.existsSync(path.join(AJS_DIR, bundle[1]))) {
      return send(200, 'text/javascript', fs.readFileSync(path.join(AJS_DIR, bundle[1])))
    }
    send(404, 'text/plain', 'not found')
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (predicate()) return true
    await sleep(50)
  }
  return predicate()
}

function isOutside(url) {
  let parsed
  try {
    parsed = new URL(url)
  } catch {
    return false
  }
  return /^(https?|wss?|ftp):$/.test(parsed.protocol) && parsed.hostname !== '127.0.0.1'
}

// Names of the headers a request went out with, leaving out those Chromium adds to every request.
function headerNames(headers) {
  const generic = /^(:|sec-|accept-encoding$|accept-language$|connection$|content-length$|host$|referer$|user-agent$)/
  return Object.keys(headers).map((h) => h.toLowerCase()).filter((h) => !generic.test(h)).sort()
}

// Events carried by one relay request body: a batch's length, 1 for a single event, 0 for metrics (`/m`).
function eventsOf(pathname, body) {
  if (/\/m$/.test(pathname)) return []
  try {
    const parsed = JSON.parse(body)
    const events = Array.isArray(parsed.batch) ? parsed.batch : [parsed]
    return events.map((e) => ({ type: e.type ?? null, userId: e.userId || null, anonymousId: e.anonymousId ?? null }))
  } catch {
    return []
  }
}

async function runOne(browser, run, pageOrigin, relay, writeKey) {
  const mask = (text) => text.split(writeKey).join('***').split(encodeURIComponent(writeKey)).join('***')
  const result = {
    name: run.name,
    requests: [],
    preflights: null,
    consoleErrors: [],
    failedRequests: [],
    outsideRequests: [],
    pageErrors: [],
    anonymousIds: [],
    error: null,
  }
  const relayRequests = new Map() // puppeteer request → recorded entry
  const wireHeaders = new Map() // CDP requestId → header names as sent
  const preflightIds = new Set()
  const outside = new Set()
  let lastRelayActivity = Date.now()

  const context = await browser.createBrowserContext()
  try {
    const page = await context.newPage()
    const cdp = await page.createCDPSession()
    await cdp.send('Network.enable')
    // Puppeteer hides CORS preflights; CDP reports them (Chromium ≥ 86) as their own requests of type Preflight.
    cdp.on('Network.requestWillBeSent', ({ requestId, request, type }) => {
      if (isOutside(request.url) && !outside.has(request.url)) {
        outside.add(request.url)
        result.outsideRequests.push({ method: request.method, url: request.url, seenBy: 'cdp' })
      }
      if (request.method === 'OPTIONS' && new URL(request.url).origin === relay.origin) {
        preflightIds.add(requestId)
        lastRelayActivity = Date.now()
      } else if (type === 'Preflight') preflightIds.add(requestId)
    })
    cdp.on('Network.requestWillBeSentExtraInfo', ({ requestId, headers }) => wireHeaders.set(requestId, headerNames(headers)))

    page.on('request', (request) => {
      const url = request.url()
      if (isOutside(url) && !outside.has(url)) {
        outside.add(url)
        result.outsideRequests.push({ method: request.method(), url, seenBy: 'puppeteer' })
      }
      if (new URL(url).origin !== relay.origin || request.method() === 'OPTIONS') return
      const parsed = new URL(url)
      const entry = { request, method: request.method(), path: mask(parsed.pathname + parsed.search), status: null, events: [], done: false }
      entry.body = Promise.resolve(request.postData() ?? request.fetchPostData().catch(() => undefined)).then((body) => {
        entry.events = eventsOf(parsed.pathname, body ?? '')
      })
      relayRequests.set(request, entry)
      result.requests.push(entry)
      lastRelayActivity = Date.now()
    })
    page.on('response', (response) => {
      const entry = relayRequests.get(response.request())
      if (!entry) return
      entry.status = response.status()
      lastRelayActivity = Date.now()
    })
    const settle = (request) => {
      const entry = relayRequests.get(request)
      if (entry) {
        entry.done = true
        lastRelayActivity = Date.now()
      }
    }
    page.on('requestfinished', settle)
    page.on('requestfailed', (request) => {
      settle(request)
      result.failedRequests.push({ method: request.method(), url: mask(request.url()), error: request.failure()?.errorText ?? null })
    })
    page.on('console', (message) => {
      if (message.type() !== 'error' && message.type() !== 'warn') return
      const where = message.location()?.url
      result.consoleErrors.push({ type: message.type(), text: mask(message.text()), ...(where ? { url: mask(where) } : {}) })
    })
    page.on('pageerror', (error) => result.pageErrors.push(mask(String(error?.message ?? error))))

    const pageUrl = `${pageOrigin}/${run.name}.html`
    const started = Date.now()
    try {
      await page.goto(pageUrl, { waitUntil: 'load', timeout: READY_TIMEOUT_MS })
    } catch (error) {
      throw new Error(`${run.name}: page ${pageUrl} never loaded: ${error.message}`)
    }
    try {
      await page.waitForFunction('window.__result', { timeout: Math.max(500, READY_TIMEOUT_MS - (Date.now() - started)) })
      const outcome = await page.evaluate(() => window.__result)
      if (outcome.error) result.error = outcome.error
      else result.anonymousIds = outcome.anonymousIds
    } catch (error) {
      result.error = `the SDK never became ready and ran the calls: ${error.message}`
    }

    // Delivered when the relay answered every request and the expected events have gone out (plus a `/m` when metrics
    // are on); then a quiet spell, so that late timers (metrics, batch tails) are caught too.
    const pending = () => result.requests.some((r) => !r.done)
    const eventsAnswered = () =>
      result.requests.filter((r) => r.status >= 200 && r.status < 300).reduce((n, r) => n + r.events.length, 0)
    const metricsSent = () => !run.metrics || result.requests.some((r) => /\/m$/.test(r.path) && r.done)
    const quietFor = (ms) => Date.now() - lastRelayActivity >= ms
    if (!result.error) {
      await waitFor(
        () => !pending() && eventsAnswered() >= EXPECTED_EVENTS && metricsSent() && quietFor(run.metrics ? 2 * METRICS_FLUSH_MS : QUIET_MS),
        DELIVERY_TIMEOUT_MS,
      )
    }

    // Leaving the page fires pagehide: beacons and keepalive flushes of whatever is still queued.
    await page.goto('about:blank', { timeout: UNLOAD_TIMEOUT_MS }).catch(() => {})
    await waitFor(() => !pending() && quietFor(QUIET_MS), UNLOAD_TIMEOUT_MS)
    await Promise.all(result.requests.map((r) => r.body))

    // Chromium ≥ 86 reports preflights to CDP; zero is a real count only because CDP would have shown them.
    result.preflights = preflightIds.size
    result.requests = result.requests.map(({ request, method, path, status, events }) => {
      const headers = wireHeaders.get(request.id) ?? headerNames(request.headers())
      return { method, path, status, headers, events }
    })
    await cdp.detach().catch(() => {})
  } finally {
    await context.close().catch(() => {})
  }
  return result
}

async function main() {
  const { relay, writeKey, pagePort } = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const watchdog = setTimeout(() => {
    process.stderr.write(`browser harness: gave up after ${WATCHDOG_MS} ms\n`)
    process.exit(3)
  }, WATCHDOG_MS)
  watchdog.unref()

  const pages = new Map(RUNS.map((run) => [run.name, run.sdk === 'ajs' ? ajsPage(run, relay, writeKey) : rsPage(run, relay, writeKey)]))
  const server = await startServer(pages, pagePort)
  const pageOrigin = `http://127.0.0.1:${server.address().port}`
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-browser-'))
  let browser
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-default-apps',
        // Nothing but 127.0.0.1 resolves: a stray CDN or vendor call fails instead of leaving the machine.
        '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
      ],
    })
  } catch (error) {
    server.close()
    fs.rmSync(userDataDir, { recursive: true, force: true })
    throw new Error(`Chromium (${CHROMIUM}) failed to launch: ${error.message}`)
  }

  try {
    const runs = []
    for (const run of RUNS) runs.push(await runOne(browser, run, pageOrigin, relay, writeKey))
    process.stdout.write(`${JSON.stringify({ runs, pageOrigin, durationMs: Date.now() - started }, null, 2)}\n`)
  } finally {
    await browser.close().catch(() => {})
    server.close()
    fs.rmSync(userDataDir, { recursive: true, force: true })
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`browser harness: ${error.stack ?? error}\n`)
    process.exit(1)
  },
)
