// Shared plumbing for the e2b SDK compatibility test: connecting the stock SDK
// to envd in debug mode, a per-run scratch directory, polling, and checks on
// host processes (envd runs on this machine, so /proc tells the truth).

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Sandbox } from 'e2b'

// Debug mode: Sandbox.create() makes no API call and the SDK talks to envd at
// http://localhost:49983 with envdVersion 99.99.99 (every feature gate on).
process.env.E2B_DEBUG = 'true'

/** Connects the stock SDK to the local envd exactly as a debug user would. */
export async function connectSandbox() {
  const opts = { debug: true }
  if (process.env.E2B_COMPAT_TRACE === '1') {
    // Logs every RPC request and response (stream messages included).
    opts.logger = {
      debug: (...a) => console.error('[sdk]', ...a.map(fmt)),
      info: (...a) => console.error('[sdk]', ...a.map(fmt)),
      warn: (...a) => console.error('[sdk]', ...a.map(fmt)),
      error: (...a) => console.error('[sdk]', ...a.map(fmt)),
    }
  }
  return Sandbox.create(opts)
}

function fmt(v) {
  return typeof v === 'string' ? v : JSON.stringify(v)
}

/**
 * Creates a unique scratch directory under /tmp, world-writable so that a
 * second OS user can work in it. Returns its path and a cleanup function.
 */
export function makeScratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2b-compat-'))
  fs.chmodSync(dir, 0o777)
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

/** Polls fn until it returns a truthy value or timeoutMs passes. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    last = await fn()
    if (last) return last
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Returns the state letter of a host process from /proc/<pid>/stat ('R', 'S',
 * 'Z', ...) or null when the process does not exist.
 */
export function procState(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch {
    return null
  }
}

/** Looks a user up in /etc/passwd; returns {name, uid, gid, home} or null. */
export function passwdEntry(name) {
  let text
  try {
    text = fs.readFileSync('/etc/passwd', 'utf8')
  } catch {
    return null
  }
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f[0] === name && f.length >= 7) {
      return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] }
    }
  }
  return null
}

/**
 * Collects the output a callback receives (strings or Uint8Array chunks) and
 * lets a test wait until it contains something.
 */
export class Collector {
  constructor() {
    this.text = ''
    this.chunks = 0
    this.decoder = new TextDecoder()
    this.push = (data) => {
      this.chunks++
      this.text += typeof data === 'string' ? data : this.decoder.decode(data, { stream: true })
    }
  }

  async waitFor(needle, timeoutMs = 15_000) {
    const ok = (t) => (needle instanceof RegExp ? needle.test(t) : t.includes(needle))
    try {
      await waitFor(() => ok(this.text), { timeoutMs, what: String(needle) })
    } catch (err) {
      err.message += `; received so far: ${JSON.stringify(this.text)}`
      throw err
    }
  }
}

/** Describes an error for assertion messages (class, code, message). */
export function describeErr(err) {
  if (!err) return String(err)
  return `${err.constructor?.name ?? typeof err}: ${err.message}`
}
