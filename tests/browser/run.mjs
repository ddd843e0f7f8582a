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

// Bounds: five sequential runs take about 7 s when all goes well and under 90 s when nothing gets through.
const READY_TIMEOUT_MS = 6000 // page load, SDK ready and the calls made
const DELIVERY_TIMEOUT_MS = 8000 // every expected event answered by the relay
const UNLOAD_TIMEOUT_MS = 1500 // what leaving the page sends (beacons, keepalive flushes)
const QUIET_MS = 400 // no relay traffic for this long means the SDK is done
const METRICS_FLUSH_MS = 250 // analytics.js metrics timer (default 30 s) so `/m` goes out within the run
const WATCHDOG_MS = 100000

// Each run makes the same 8 calls, so the relay should receive 8 events (page, identify, alias, identify, page, track,
// group, page), whatever the batching.
const EXPECTED_EVENTS = 8

const RUNS = [
  // ajs-default is the recipe exactly as written; ajs-batching turns on batching and the SDK's metrics (to /v1/m).
  { name: 'ajs-default', sdk: 'ajs' },
  { name: 'ajs-batching', sdk: 'ajs', batching: true, metrics: true },
  { name: 'rs-xhr', sdk: 'rs' },
  { name: 'rs-batch', sdk: 'rs', batch: true },
  { name: 'rs-beacon', sdk: 'rs', beacon: true },
  // Not an SDK: one request carrying every header the two SDKs add on retries (which a test cannot make them send
  // without failing the relay), so Chromium's preflight is checked against them all.
  { name: 'retry-headers', sdk: 'probe', expectedEvents: 1 },
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
  if (!positional[1]) usage('the write key is empty')
  if (!Number.isInteger(pagePort) || pagePort < 0 || pagePort > 65535) usage('--page-port must be a port number')
  let relay
  try {
    relay = new URL(positional[0])
  } catch {
    usage(`not a URL: ${positional[0]}`)
  }
  // Chromium resolves no other host, so e.g. `localhost` would make every relay request an outside one.
  if (relay.hostname !== '127.0.0.1') process.stderr.write(`warning: relay host ${relay.hostname} is not 127.0.0.1\n`)
  return { relay, writeKey: positional[1], pagePort }
}

// The call sequence a web page makes, identical for both SDKs (their public APIs share these signatures). Runs in the
// page; `anonymousId` reads the SDK's current anonymousId. Alias comes before identify(userId), and the page waits for
// alias() to settle: analytics.js fills in the alias's previousId only when its Segment.io plugin sends the event
// (plugins/segmentio/index.ts, onAlias), so an identify or reset made in the same tick would become the previousId.
const CALLS = `
async function runCalls(a, P, anonymousId) {
  var ids = []
  a.page('Landing')
  a.identify({ email: P + '-visitor@example.com' }) // traits only: no userId, sent with the anonymousId
  await a.alias(P + '-user') // still anonymous: previousId is the anonymousId
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
function finish(calls) {
  calls.then(
    function (ids) { window.__result = { anonymousIds: ids } },
    function (e) { window.__result = { error: String((e && e.stack) || e) } })
}`

// The setup a web developer copies: the recipe blocks of docs/sdks.md, taken as written but for the relay's address, the
// key and the mode. Each change must find its text, so the page and the documentation cannot drift apart.
const DOCS = path.join(HERE, '..', '..', 'docs', 'sdks.md')

function recipe(name) {
  const text = fs.readFileSync(DOCS, 'utf8')
  const marker = `<!-- recipe: ${name} -->`
  const at = text.indexOf(marker)
  const block = at < 0 ? null : text.slice(at + marker.length).match(/^\s*```html\n([\s\S]*?)```/)
  if (!block) throw new Error(`docs/sdks.md has no html block after ${marker}`)
  return block[1]
}

function edit(text, from, to) {
  if (!text.includes(from)) throw new Error(`docs/sdks.md recipe no longer holds ${JSON.stringify(from)}`)
  return text.split(from).join(to)
}

function addressed(text, relay, writeKey) {
  text = edit(text, 'YOUR_WRITE_KEY', writeKey)
  if (text.includes('https://RELAY_HOST')) text = edit(text, 'https://RELAY_HOST', relay.origin)
  if (text.includes("protocol: 'https'")) text = edit(text, "protocol: 'https'", `protocol: '${relay.protocol.replace(':', '')}'`)
  return text.includes('RELAY_HOST') ? edit(text, 'RELAY_HOST', relay.host) : text
}

function ajsPage(run, relay, writeKey) {
  let setup = addressed(recipe('analytics.js'), relay, writeKey)
  // Metrics on: the recipe's "remove the line", with the timer shortened so `/v1/m` goes out within the run.
  if (run.metrics) setup = edit(setup, 'metrics: { sampleRate: 0 },', `metrics: { flushTimer: ${METRICS_FLUSH_MS} },`)
  if (run.batching) {
    setup = edit(setup, '// deliveryStrategy:', 'deliveryStrategy:')
    setup = edit(setup, 'size: 10, timeout: 5000', 'size: 3, timeout: 300')
  }
  return html(`${setup}
<script>${CALLS}
analytics.then(function (loaded) {
  var a = loaded[0]
  finish(runCalls(a, ${json(run.name)}, function () { return a.user().anonymousId() }))
}, function (e) { window.__result = { error: 'load failed: ' + e } })
</script>`)
}

function rsPage(run, relay, writeKey) {
  let setup = addressed(recipe('rudderstack'), relay, writeKey)
  if (run.batch) {
    setup = edit(setup, '// queueOptions:', 'queueOptions:')
    setup = edit(setup, 'maxItems: 10, flushInterval: 1000', 'maxItems: 3, flushInterval: 300')
  }
  if (run.beacon) {
    setup = edit(setup, '// useBeacon:', 'useBeacon:')
    setup = edit(setup, 'maxItems: 10, flushQueueInterval: 1000', 'maxItems: 3, flushQueueInterval: 300')
  }
  return html(`${setup}
<script>${CALLS}
rudderanalytics.ready(function () {
  finish(runCalls(rudderanalytics, ${json(run.name)}, function () { return rudderanalytics.getAnonymousId() }))
})
</script>`)
}

// analytics.js adds X-Retry-Count (fetch-dispatcher.ts, batched-dispatcher.ts); RudderStack's XhrQueue the Rsa-*
// headers (xhrQueue/utilities.ts), besides AnonymousId and SentAt on every request.
function probePage(run, relay, writeKey) {
  const headers = {
    authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`,
    'content-type': 'application/json;charset=UTF-8',
    anonymousid: Buffer.from('probe-anon').toString('base64'),
    sentat: new Date().toISOString(),
    'x-retry-count': '1',
    'rsa-retry-attempt': '1',
    'rsa-retry-reason': 'server-503',
    'rsa-since-first-attempt': '2000',
    'rsa-since-last-attempt': '2000',
    'rsa-recovered': 'true',
  }
  const event = { type: 'track', userId: 'retry-headers-user', event: 'Retried', properties: { attempt: 1 } }
  return html(`<script>
fetch(${json(`${relay.origin}/v1/track`)}, { method: 'POST', headers: ${json(headers)}, body: ${json(JSON.stringify(event))} })
  .then(function (answer) { return answer.json() })
  .then(function (body) { window.__result = body.success ? { anonymousIds: [] } : { error: JSON.stringify(body) } },
        function (e) { window.__result = { error: String(e) } })
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
    if (url.pathname === '/rudderstack/index.js') return send(200, 'text/javascript', fs.readFileSync(RSA_FILE))
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

// The events one relay request carried (a batch's, or the single event; none for metrics, `/m`), with their ids.
function eventsOf(pathname, body) {
  if (/\/m$/.test(pathname)) return []
  try {
    const parsed = JSON.parse(body)
    const events = Array.isArray(parsed.batch) ? parsed.batch : [parsed]
    return events.map((e) => ({
      type: e.type ?? null,
      userId: e.userId || null, // RudderStack sends "" for no user, analytics.js null
      anonymousId: e.anonymousId ?? null,
      ...(e.type === 'alias' ? { previousId: e.previousId ?? null } : {}),
    }))
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
  const outside = new Set() // request ids already listed in outsideRequests (puppeteer and CDP share them)
  const noteOutside = (id, method, url, seenBy) => {
    if (!isOutside(url) || outside.has(id)) return
    outside.add(id)
    result.outsideRequests.push({ method, url: mask(url), seenBy })
  }
  let lastRelayActivity = Date.now()

  const context = await browser.createBrowserContext()
  try {
    const page = await context.newPage()
    const cdp = await page.createCDPSession()
    await cdp.send('Network.enable')
    // CDP reports CORS preflights as requests of their own (type Preflight); puppeteer shows only some of them.
    cdp.on('Network.requestWillBeSent', ({ requestId, request }) => {
      noteOutside(requestId, request.method, request.url, 'cdp')
      if (request.method === 'OPTIONS' && new URL(request.url).origin === relay.origin) {
        preflightIds.add(requestId)
        lastRelayActivity = Date.now()
      }
    })
    cdp.on('Network.requestWillBeSentExtraInfo', ({ requestId, headers }) => wireHeaders.set(requestId, headerNames(headers)))

    page.on('request', (request) => {
      const url = request.url()
      noteOutside(request.id, request.method(), url, 'puppeteer')
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
      result.error = `the page did not finish its calls (SDK not ready?): ${error.message}`
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
        () => !pending() && eventsAnswered() >= (run.expectedEvents ?? EXPECTED_EVENTS) && metricsSent() && quietFor(run.metrics ? 2 * METRICS_FLUSH_MS : QUIET_MS),
        DELIVERY_TIMEOUT_MS,
      )
    }

    // Leaving the page fires pagehide: beacons and keepalive flushes of whatever is still queued.
    await page.goto('about:blank', { timeout: UNLOAD_TIMEOUT_MS }).catch(() => {})
    await waitFor(() => !pending() && quietFor(QUIET_MS), UNLOAD_TIMEOUT_MS)
    await Promise.all(result.requests.map((r) => r.body))

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

  const page = { ajs: ajsPage, rs: rsPage, probe: probePage }
  const pages = new Map(RUNS.map((run) => [run.name, page[run.sdk](run, relay, writeKey)]))
  const server = await startServer(pages, pagePort)
  const pageOrigin = `http://127.0.0.1:${server.address().port}`
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-browser-'))
  let browser
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true, // puppeteer adds --headless=new itself; listed below too, as the flags to run with
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
    const report = `${JSON.stringify({ runs, pageOrigin, durationMs: Date.now() - started }, null, 2)}\n`
    await new Promise((resolve) => process.stdout.write(report, resolve)) // all of it out before process.exit
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
