// Compatibility test: the stock `e2b` npm SDK (pinned in package.json), in
// debug mode, drives our envd at http://localhost:49983. This file covers the
// process side (commands.*, pty.*); files.test.mjs covers the filesystem side.
// run.sh builds and starts envd, then runs both with `node --test`.

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { AuthenticationError, CommandExitError, InvalidArgumentError, TimeoutError } from 'e2b'

import { Collector, connectSandbox, describeErr, makeScratch, passwdEntry, procState, waitFor } from './helpers.mjs'

const T = { timeout: 30_000 }

let sbx
let scratch
const started = new Set() // pids of background commands to kill at the end

before(async () => {
  scratch = makeScratch()
  sbx = await connectSandbox()
})

after(async () => {
  for (const pid of started) await sbx.commands.kill(pid).catch(() => {})
  scratch?.cleanup()
})

/** Starts a background command and remembers its pid for clean-up. */
async function background(cmd, opts = {}) {
  const h = await sbx.commands.run(cmd, { background: true, ...opts })
  started.add(h.pid)
  return h
}

/** Asserts that p rejects with a CommandExitError and returns that error. */
async function rejectsExit(p, msg) {
  let caught
  await assert.rejects(p, (err) => {
    caught = err
    assert.ok(err instanceof CommandExitError, `${msg}: expected CommandExitError, got ${describeErr(err)}`)
    return true
  })
  return caught
}

/** Waits until a host pid is gone (a zombie still counts as present). */
async function assertGone(pid, what) {
  try {
    await waitFor(() => procState(pid) === null, { timeoutMs: 10_000, what: `${what} (pid ${pid}) to disappear` })
  } catch (err) {
    err.message += `; /proc state ${procState(pid)}`
    throw err
  }
}

describe('sandbox (debug mode)', () => {
  it('create() made a debug sandbox that reports running (GET /health)', T, async () => {
    assert.equal(sbx.sandboxId, 'debug_sandbox_id')
    assert.equal(await sbx.isRunning(), true)
  })
})

describe('commands.run (foreground)', () => {
  it('returns stdout, empty stderr and exit code 0', T, async () => {
    const r = await sbx.commands.run('echo "Hello, World!"; printf "a\\nb"')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'Hello, World!\na\nb')
    assert.equal(r.stderr, '')
  })

  it('returns stderr separately', T, async () => {
    const r = await sbx.commands.run('echo to-out; echo to-err >&2')
    assert.equal(r.stdout, 'to-out\n')
    assert.equal(r.stderr, 'to-err\n')
  })

  it('throws CommandExitError with code and output on non-zero exit', T, async () => {
    const err = await rejectsExit(sbx.commands.run('echo partial; echo bad >&2; exit 3'), 'exit 3')
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'partial\n')
    assert.equal(err.stderr, 'bad\n')
  })

  it('passes large output through intact', T, async () => {
    // 200 000 bytes crosses envd's 32 KiB chunking several times.
    const r = await sbx.commands.run('head -c 200000 /dev/zero | tr "\\0" x')
    assert.equal(r.stdout.length, 200000)
    assert.match(r.stdout, /^x+$/)
  })

  it('runs many commands concurrently', T, async () => {
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => sbx.commands.run(`echo n${i}; exit ${i % 3}`).catch((e) => e)))
    rs.forEach((r, i) => {
      assert.equal(r.exitCode, i % 3, `command ${i}: ${describeErr(r)}`)
      assert.equal(r.stdout, `n${i}\n`)
    })
  })

  it('passes envs', T, async () => {
    const r = await sbx.commands.run('printf "%s|%s" "$FOO" "$E2B_COMPAT_SECOND"', {
      envs: { FOO: 'bar baz', E2B_COMPAT_SECOND: 'x=y' },
    })
    assert.equal(r.stdout, 'bar baz|x=y')
  })

  it('sets HOME, USER and PATH for the default user', T, async () => {
    const r = await sbx.commands.run('printf "%s|%s|" "$HOME" "$USER"; command -v sh')
    const [home, user, sh] = r.stdout.trim().split('|')
    assert.equal(user, 'root')
    assert.equal(home, passwdEntry('root')?.home ?? '/root')
    assert.ok(sh.endsWith('/sh'), `sh not found on PATH: ${r.stdout}`)
  })

  it('honours cwd', T, async () => {
    const r = await sbx.commands.run('pwd', { cwd: scratch.dir })
    assert.equal(r.stdout.trim(), fs.realpathSync(scratch.dir))
  })

  it('rejects a cwd that does not exist', T, async () => {
    await assert.rejects(sbx.commands.run('pwd', { cwd: path.join(scratch.dir, 'no-such-dir') }), (err) => {
      assert.ok(
        err instanceof InvalidArgumentError || err instanceof CommandExitError,
        `expected InvalidArgumentError (or a failing command), got ${describeErr(err)}`,
      )
      return true
    })
  })

  it('runs as the default user (root) and as user "root"', T, async () => {
    const def = await sbx.commands.run('id -u; id -un')
    assert.equal(def.stdout, '0\nroot\n')
    const root = await sbx.commands.run('id -u; id -un', { user: 'root' })
    assert.equal(root.stdout, '0\nroot\n')
  })

  const nobody = passwdEntry('nobody')
  it('runs as a second user ("nobody")', { ...T, skip: nobody ? false : 'no "nobody" user on this machine' }, async () => {
    const r = await sbx.commands.run('id -u; id -g; id -un; printf "%s|%s" "$HOME" "$USER"', {
      user: 'nobody',
      cwd: scratch.dir, // nobody's home (/nonexistent) usually does not exist
    })
    assert.equal(r.stdout, `${nobody.uid}\n${nobody.gid}\nnobody\n${nobody.home}|nobody`)
    // Files it creates belong to it.
    await sbx.commands.run(`touch ${scratch.dir}/by-nobody`, { user: 'nobody', cwd: scratch.dir })
    assert.equal(fs.statSync(path.join(scratch.dir, 'by-nobody')).uid, nobody.uid)
  })

  it('refuses an unknown user', T, async () => {
    await assert.rejects(sbx.commands.run('true', { user: 'no-such-user-e2bcompat' }), (err) => {
      assert.ok(err instanceof AuthenticationError, `expected AuthenticationError, got ${describeErr(err)}`)
      return true
    })
  })

  it('streams to onStdout / onStderr callbacks in order', T, async () => {
    const out = []
    const errs = []
    const r = await sbx.commands.run('for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.2; done', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => errs.push(d),
    })
    assert.equal(out.join(''), 'out1\nout2\nout3\n')
    assert.equal(errs.join(''), 'err1\nerr2\nerr3\n')
    assert.ok(out.length >= 2, `expected output in several chunks, got ${out.length}`)
    assert.equal(r.stdout, 'out1\nout2\nout3\n')
  })

  it('gives the command an empty stdin unless stdin:true', T, async () => {
    const r = await sbx.commands.run('cat; echo eof', { timeoutMs: 10_000 })
    assert.equal(r.stdout, 'eof\n')
  })

  it('rejects a run that outlives timeoutMs', T, async () => {
    const t0 = Date.now()
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1500 }), (err) => {
      assert.ok(
        err instanceof TimeoutError || err instanceof CommandExitError,
        `expected TimeoutError (or CommandExitError), got ${describeErr(err)}`,
      )
      return true
    })
    const took = Date.now() - t0
    assert.ok(took >= 1400 && took < 10_000, `run with timeoutMs 1500 ended after ${took} ms`)
  })

  it('kills the process when timeoutMs passes', T, async () => {
    // `exec` keeps the pid from the start event for the sleeping process.
    const h = await background('exec sleep 30', { timeoutMs: 1500 })
    assert.notEqual(procState(h.pid), null, 'process not running right after start')
    await assert.rejects(h.wait(), (err) => {
      assert.ok(
        err instanceof TimeoutError || err instanceof CommandExitError,
        `expected TimeoutError (or CommandExitError), got ${describeErr(err)}`,
      )
      return true
    })
    await assertGone(h.pid, 'process past its timeoutMs')
    started.delete(h.pid)
  })
})

describe('background commands', () => {
  it('background:true gives a pid; wait() returns the result', T, async () => {
    const h = await background('sleep 0.3; echo done')
    assert.equal(typeof h.pid, 'number')
    assert.ok(h.pid > 0)
    const r = await h.wait()
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'done\n')
    assert.equal(h.exitCode, 0)
  })

  it('commands.list() sees a running background command', T, async () => {
    const h = await background('sleep 300', { cwd: scratch.dir, envs: { COMPAT_LIST: 'yes' } })
    const list = await sbx.commands.list()
    const p = list.find((x) => x.pid === h.pid)
    assert.ok(p, `pid ${h.pid} not in ${JSON.stringify(list)}`)
    assert.equal(p.cmd, '/bin/bash')
    assert.deepEqual(p.args, ['-l', '-c', 'sleep 300'])
    assert.equal(p.envs.COMPAT_LIST, 'yes')
    assert.equal(p.cwd, scratch.dir)
    assert.equal(await h.kill(), true)
    await rejectsExit(h.wait(), 'killed command')
    started.delete(h.pid)
    await waitFor(async () => !(await sbx.commands.list()).some((x) => x.pid === h.pid), {
      what: `pid ${h.pid} to leave commands.list()`,
    })
  })

  it('handle.kill() ends the command; wait() throws CommandExitError', T, async () => {
    const h = await background('sleep 300')
    assert.equal(await h.kill(), true)
    const err = await rejectsExit(h.wait(), 'killed command')
    assert.notEqual(err.exitCode, 0)
    started.delete(h.pid)
    await assertGone(h.pid, 'killed command')
  })

  it('commands.kill() of an unknown pid returns false', T, async () => {
    assert.equal(await sbx.commands.kill(999_999), false)
  })

  it('sendStdin / closeStdin feed a stdin:true command', T, async () => {
    const out = new Collector()
    const h = await background('cat', { stdin: true, onStdout: out.push })
    await sbx.commands.sendStdin(h.pid, 'hello\n')
    await out.waitFor('hello\n')
    await h.sendStdin('wörld\n')
    await sbx.commands.sendStdin(h.pid, new TextEncoder().encode('bytes\n'))
    await out.waitFor('bytes\n')
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    started.delete(h.pid)
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'hello\nwörld\nbytes\n')
  })

  it('commands.connect(pid) receives later output and the exit', T, async () => {
    const go = path.join(scratch.dir, 'go')
    const h = await background(`echo before; while [ ! -e ${go} ]; do sleep 0.05; done; echo after; exit 5`)
    await h.disconnect()
    const out = new Collector()
    const c = await sbx.commands.connect(h.pid, { onStdout: out.push })
    assert.equal(c.pid, h.pid)
    fs.writeFileSync(go, '')
    await out.waitFor('after\n')
    const err = await rejectsExit(c.wait(), 'connected command exiting 5')
    started.delete(h.pid)
    assert.equal(err.exitCode, 5)
    assert.match(err.stdout, /after\n$/)
  })

  it('commands.kill(pid) also kills the children of the command', T, async () => {
    const childPidFile = path.join(scratch.dir, 'child.pid')
    const h = await background(`sh -c "sleep 300 & echo \\$! > ${childPidFile}; wait"`)
    const child = Number(
      await waitFor(() => fs.existsSync(childPidFile) && fs.readFileSync(childPidFile, 'utf8').trim(), {
        what: 'child.pid',
      }),
    )
    assert.ok(child > 0)
    assert.equal(await sbx.commands.kill(h.pid), true)
    await rejectsExit(h.wait(), 'killed parent')
    started.delete(h.pid)
    // The SDK's own way to check: `kill -0 <child>` must fail once it is gone.
    try {
      await waitFor(
        async () => {
          try {
            await sbx.commands.run(`kill -0 ${child}`)
            return false
          } catch (err) {
            if (err instanceof CommandExitError) return true
            throw err
          }
        },
        { timeoutMs: 10_000, intervalMs: 100, what: `child ${child} of killed pid ${h.pid} to be gone` },
      )
    } catch (err) {
      err.message += `; /proc state of child: ${procState(child)}`
      process.kill(child, 'SIGKILL')
      throw err
    }
  })
})

describe('pty', () => {
  it('create, sendInput, resize and kill', T, async () => {
    const out = new Collector()
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: out.push, cwd: scratch.dir, timeoutMs: 60_000 })
    started.add(h.pid)
    assert.ok(h.pid > 0)
    const enc = new TextEncoder()
    // The arithmetic makes the answer differ from the echoed input line.
    await sbx.pty.sendInput(h.pid, enc.encode('echo hi-$((40+2)) $TERM\n'))
    await out.waitFor('hi-42 xterm-256color')
    await sbx.pty.sendInput(h.pid, enc.encode('stty size; pwd\n'))
    await out.waitFor('24 80')
    await out.waitFor(fs.realpathSync(scratch.dir))
    await sbx.pty.resize(h.pid, { cols: 100, rows: 40 })
    await sbx.pty.sendInput(h.pid, enc.encode('stty size\n'))
    await out.waitFor('40 100')
    assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid), 'pty not in commands.list()')
    assert.equal(await sbx.pty.kill(h.pid), true)
    await rejectsExit(h.wait(), 'killed pty')
    started.delete(h.pid)
    await assertGone(h.pid, 'killed pty')
  })

  it('pty.connect(pid) receives later output', T, async () => {
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 60_000 })
    started.add(h.pid)
    await h.disconnect()
    const out = new Collector()
    const c = await sbx.pty.connect(h.pid, { onData: out.push })
    assert.equal(c.pid, h.pid)
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('echo again-$((6*7))\n'))
    await out.waitFor('again-42')
    assert.equal(await c.kill(), true)
    await rejectsExit(c.wait(), 'killed pty')
    started.delete(h.pid)
  })

  it('exits with the shell status on "exit"', T, async () => {
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 60_000 })
    started.add(h.pid)
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('exit 0\n'))
    const r = await h.wait()
    started.delete(h.pid)
    assert.equal(r.exitCode, 0)
  })
})
