// Drives the official JS SDK, @bitrix24/b24jssdk (its webhook client B24Hook), through the
// proxy: tests/sdks.rs runs it.
//
// Environment:
//   B24_BASE_URL   the proxy, e.g. https://127.0.0.1:PORT (B24Hook insists on https)
//   B24_WEBHOOK    the webhook's "USER_ID/SECRET", e.g. 1/sim-secret-1
//   B24_CA_FILE    the test CA that signed the proxy's certificate. Node reads it only at start
//                  as NODE_EXTRA_CA_CERTS, so the script re-runs itself with that set if needed.
//   B24_PLAIN_HTTP_OVERRIDE=1
//                  only for a plain-http endpoint (e.g. the simulator itself): the interceptor of
//                  protocol doc section 3.2 (b) turns the SDK's https:// back into http://
//
// Usage: node jssdk_check.mjs [STEP ...]   (no step: all of them, in order)
//
// Prints one JSON object per step on its own line. The SDK is used unchanged, the way an
// integration uses it: actions.v2.call.make and actions.v2.batch.make.

import { spawnSync } from 'node:child_process'
import process from 'node:process'

const ca = process.env.B24_CA_FILE
if (ca && process.env.NODE_EXTRA_CA_CERTS !== ca) {
  const r = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: ca }
  })
  process.exit(r.status ?? 1)
}

const { AjaxError, ApiVersion, B24Hook, SdkError } = await import('@bitrix24/b24jssdk')

const base = process.env.B24_BASE_URL.replace(/\/+$/, '')
const [userId, secret] = process.env.B24_WEBHOOK.split('/')
let b24
if (process.env.B24_PLAIN_HTTP_OVERRIDE === '1') {
  b24 = new B24Hook({ b24Url: base, userId: Number(userId), secret })
  b24.getHttpClient(ApiVersion.v2).ajaxClient.interceptors.request.use((c) => {
    c.url = c.url.replace(/^https:/, 'http:')
    return c
  })
} else {
  b24 = B24Hook.fromWebhookUrl(`${base}/rest/${userId}/${secret}`)
}
const UPDATE = 'crm.automatedsolution.update'

const call = (method, params) => b24.actions.v2.call.make({ method, params })
const batch = (calls) => b24.actions.v2.batch.make({ calls, options: { isHaltOnError: true } })

function batchOut (r) {
  return { ok: r.isSuccess, result: r.getData(), errors: r.getErrorMessages() }
}

const steps = {
  async single_update () {
    const r = await call(UPDATE, { id: 238, fields: { title: 'HR (b24jssdk)', typeIds: [14, 158, 190] } })
    return { ok: r.isSuccess, result: r.getData().result, errors: r.getErrorMessages() }
  },
  async batch_reads () {
    const r = batchOut(await batch({
      get: { method: 'crm.automatedsolution.get', params: { id: 238 } },
      deals: { method: 'crm.deal.list' },
      me: { method: 'user.current' }
    }))
    return {
      ok: r.ok,
      solution: r.result?.get?.automatedSolution,
      deal_count: (r.result?.deals ?? []).length,
      user_id: r.result?.me?.ID,
      errors: r.errors
    }
  },
  async batch_updates () {
    return batchOut(await batch({
      rename: { method: UPDATE, params: { id: 238, fields: { title: 'HR (b24jssdk batch)' } } },
      bind: { method: UPDATE, params: { id: 301, fields: { typeIds: [172, 190] } } }
    }))
  },
  async batch_refused () {
    // qs drops empty arrays from batch commands (typeIds [] would change nothing), so "unbind
    // everything" is spelled [0], which the portal normalises to no bindings at all. The proxy
    // must refuse the whole batch.
    return batchOut(await batch({
      rename: { method: UPDATE, params: { id: 238, fields: { title: 'must not be applied' } } },
      unbind: { method: UPDATE, params: { id: 267, fields: { typeIds: [0] } } }
    }))
  },
  async empty_type_ids () {
    const r = await call(UPDATE, { id: 267, fields: { typeIds: [] } })
    return { ok: r.isSuccess, result: r.getData()?.result, errors: r.getErrorMessages() }
  }
}

const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(steps)
for (const name of names) {
  if (!(name in steps)) {
    console.error(`unknown step '${name}'; steps: ${Object.keys(steps).join(', ')}`)
    process.exit(2)
  }
}
for (const name of names) {
  const started = performance.now()
  let out
  try {
    out = { ...(await steps[name]()), raised: false, crashed: false }
  } catch (e) {
    if (e instanceof SdkError) {
      // The SDK's normal error for a refused call: AjaxError (an SdkError) with code and status.
      out = {
        ok: false,
        raised: true,
        crashed: false,
        error: { type: e.name, api_error: e instanceof AjaxError, code: e.code, status: e.status, description: e.message }
      }
    } else {
      out = { ok: false, raised: true, crashed: true, error: { type: e?.name, message: String(e?.message ?? e) }, stack: e?.stack }
    }
  }
  console.log(JSON.stringify({ step: name, ...out, elapsed_ms: Math.round(performance.now() - started) }))
}
