// Compatibility test, filesystem side: the stock `e2b` SDK's files.* API
// against our envd (debug mode, http://localhost:49983). Results are checked
// both through the SDK and directly on disk, since envd runs on this machine.

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { FileNotFoundError, InvalidArgumentError, SandboxError } from 'e2b'

import { connectSandbox, describeErr, makeScratch, passwdEntry, sleep, waitFor } from './helpers.mjs'

const T = { timeout: 30_000 }

let sbx
let scratch
let dir // scratch.dir, shortened

before(async () => {
  scratch = makeScratch()
  dir = scratch.dir
  sbx = await connectSandbox()
})

after(() => scratch?.cleanup())

function rejectsWith(p, cls) {
  return assert.rejects(p, (err) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${describeErr(err)}`)
    return true
  })
}

describe('files.write / files.read', () => {
  it('writes text to a nested path, creating parents, and reads it back', T, async () => {
    const p = path.join(dir, 'w/a/b/c.txt')
    const info = await sbx.files.write(p, 'hello text\nline 2 ✓')
    assert.equal(info.path, p)
    assert.equal(info.name, 'c.txt')
    assert.equal(info.type, 'file')
    assert.equal(fs.readFileSync(p, 'utf8'), 'hello text\nline 2 ✓')
    assert.equal(await sbx.files.read(p), 'hello text\nline 2 ✓')
  })

  it('overwrites an existing file', T, async () => {
    const p = path.join(dir, 'w/over.txt')
    await sbx.files.write(p, 'a much longer first version')
    await sbx.files.write(p, 'short')
    assert.equal(await sbx.files.read(p), 'short')
  })

  it('round-trips binary bytes', T, async () => {
    const p = path.join(dir, 'w/bin.dat')
    const data = new Uint8Array(4096)
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff
    await sbx.files.write(p, data)
    assert.deepEqual(new Uint8Array(fs.readFileSync(p)), data)
    const back = await sbx.files.read(p, { format: 'bytes' })
    assert.ok(back instanceof Uint8Array)
    assert.deepEqual(back, data)
    const blob = await sbx.files.read(p, { format: 'blob' })
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), data)
  })

  it('reads a large file as a stream', T, async () => {
    const p = path.join(dir, 'w/large.bin')
    const data = Buffer.alloc(3 * 1024 * 1024, 'z')
    await sbx.files.write(p, data)
    assert.equal(fs.statSync(p).size, data.length)
    const stream = await sbx.files.read(p, { format: 'stream' })
    let n = 0
    for await (const chunk of stream) n += chunk.length
    assert.equal(n, data.length)
  })

  it('writes and reads an empty file', T, async () => {
    const p = path.join(dir, 'w/empty')
    await sbx.files.write(p, '')
    assert.equal(fs.statSync(p).size, 0)
    assert.equal(await sbx.files.read(p), '')
  })

  it('writes several files in one call (writeFiles)', T, async () => {
    const res = await sbx.files.writeFiles([
      { path: path.join(dir, 'multi/one.txt'), data: 'one' },
      { path: path.join(dir, 'multi/sub/two.txt'), data: 'two' },
    ])
    assert.equal(res.length, 2)
    assert.deepEqual(res.map((r) => r.name).sort(), ['one.txt', 'two.txt'])
    assert.equal(fs.readFileSync(path.join(dir, 'multi/one.txt'), 'utf8'), 'one')
    assert.equal(fs.readFileSync(path.join(dir, 'multi/sub/two.txt'), 'utf8'), 'two')
  })

  it('writes with gzip (octet-stream upload)', T, async () => {
    const p = path.join(dir, 'w/gz.txt')
    await sbx.files.write(p, 'compressed body', { gzip: true })
    assert.equal(fs.readFileSync(p, 'utf8'), 'compressed body')
    assert.equal(await sbx.files.read(p, { gzip: true }), 'compressed body')
  })

  const nobody = passwdEntry('nobody')
  it('writes as another user; the file and new parents belong to it', { ...T, skip: nobody ? false : 'no "nobody" user' }, async () => {
    const p = path.join(dir, 'nobody-dir/inner/f.txt')
    await sbx.files.write(p, 'mine', { user: 'nobody' })
    assert.equal(fs.statSync(p).uid, nobody.uid)
    assert.equal(fs.statSync(path.join(dir, 'nobody-dir')).uid, nobody.uid)
    const info = await sbx.files.getInfo(p)
    assert.equal(info.owner, 'nobody')
    assert.equal(await sbx.files.read(p, { user: 'nobody' }), 'mine')
  })

  it('stores metadata given on write; an overwrite without metadata clears it', T, async () => {
    const p = path.join(dir, 'w/meta.txt')
    const md = { author: 'mish', purpose: 'upload' }
    const info = await sbx.files.write(p, 'm', { metadata: md })
    assert.deepEqual(info.metadata, md)
    assert.deepEqual((await sbx.files.getInfo(p)).metadata, md)
    const again = await sbx.files.write(p, 'n')
    assert.equal(again.metadata, undefined)
    assert.equal((await sbx.files.getInfo(p)).metadata, undefined)
  })

  it('keeps metadata through octet-stream uploads, list() and rename()', T, async () => {
    const d = path.join(dir, 'meta2')
    const md = { tag: 'listed' }
    const info = await sbx.files.write(path.join(d, 'a.txt'), 'a', { metadata: md, useOctetStream: true })
    assert.deepEqual(info.metadata, md)
    const listed = (await sbx.files.list(d)).find((e) => e.name === 'a.txt')
    assert.deepEqual(listed?.metadata, md)
    const moved = await sbx.files.rename(path.join(d, 'a.txt'), path.join(d, 'b.txt'))
    assert.deepEqual(moved.metadata, md)
  })

  it('read of a missing file throws FileNotFoundError', T, async () => {
    await rejectsWith(sbx.files.read(path.join(dir, 'missing.txt')), FileNotFoundError)
  })
})

describe('files metadata operations', () => {
  it('exists() is true for files and dirs, false for missing paths', T, async () => {
    const p = path.join(dir, 'ex/file.txt')
    await sbx.files.write(p, 'x')
    assert.equal(await sbx.files.exists(p), true)
    assert.equal(await sbx.files.exists(path.join(dir, 'ex')), true)
    assert.equal(await sbx.files.exists(path.join(dir, 'ex/nope.txt')), false)
  })

  it('makeDir() is true when created (with parents), false when it exists', T, async () => {
    const p = path.join(dir, 'mk/x/y/z')
    assert.equal(await sbx.files.makeDir(p), true)
    assert.ok(fs.statSync(p).isDirectory())
    assert.equal(await sbx.files.makeDir(p), false)
  })

  it('list() returns the entries of a directory, depth 1 and 2', T, async () => {
    const d = path.join(dir, 'ls')
    fs.mkdirSync(path.join(d, 'sub'), { recursive: true })
    fs.writeFileSync(path.join(d, 'a.txt'), 'aaa')
    fs.writeFileSync(path.join(d, 'sub/b.txt'), 'b')
    fs.symlinkSync('a.txt', path.join(d, 'link'))
    const entries = await sbx.files.list(d)
    const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
    assert.deepEqual(Object.keys(byName).sort(), ['a.txt', 'link', 'sub'])
    assert.equal(byName['a.txt'].type, 'file')
    assert.equal(byName['a.txt'].path, path.join(d, 'a.txt'))
    assert.equal(byName['a.txt'].size, 3)
    assert.equal(byName.sub.type, 'dir')
    assert.equal(byName.link.type, 'symlink')
    assert.equal(byName.link.symlinkTarget, path.join(d, 'a.txt'))
    const deep = await sbx.files.list(d, { depth: 2 })
    assert.deepEqual(deep.map((e) => e.path).sort(), [
      path.join(d, 'a.txt'),
      path.join(d, 'link'),
      path.join(d, 'sub'),
      path.join(d, 'sub/b.txt'),
    ])
  })

  it('list() of a missing directory throws FileNotFoundError', T, async () => {
    await rejectsWith(sbx.files.list(path.join(dir, 'no-such-dir')), FileNotFoundError)
  })

  it('getInfo() describes a file and a directory like stat(2) does', T, async () => {
    const p = path.join(dir, 'info/f.txt')
    await sbx.files.write(p, '12345')
    const st = fs.statSync(p)
    const info = await sbx.files.getInfo(p)
    assert.equal(info.name, 'f.txt')
    assert.equal(info.path, p)
    assert.equal(info.type, 'file')
    assert.equal(info.size, 5)
    assert.equal(info.mode & 0o777, st.mode & 0o777)
    assert.match(info.permissions, /^-[rwx-]{9}$/)
    assert.equal(info.owner, 'root')
    assert.equal(info.group, 'root')
    assert.ok(info.modifiedTime instanceof Date)
    assert.ok(Math.abs(info.modifiedTime.getTime() - st.mtimeMs) < 1000, `mtime ${info.modifiedTime} vs ${st.mtime}`)
    const d = await sbx.files.getInfo(path.join(dir, 'info'))
    assert.equal(d.type, 'dir')
    assert.match(d.permissions, /^d[rwx-]{9}$/)
  })

  it('getInfo() of a missing path throws FileNotFoundError', T, async () => {
    await rejectsWith(sbx.files.getInfo(path.join(dir, 'nope')), FileNotFoundError)
  })

  it('rename() moves a file and returns the new entry', T, async () => {
    const from = path.join(dir, 'mv/from.txt')
    const to = path.join(dir, 'mv/to.txt')
    await sbx.files.write(from, 'moving')
    const info = await sbx.files.rename(from, to)
    assert.equal(info.path, to)
    assert.equal(info.name, 'to.txt')
    assert.equal(info.type, 'file')
    assert.equal(await sbx.files.exists(from), false)
    assert.equal(await sbx.files.read(to), 'moving')
  })

  it('remove() deletes a file and a non-empty directory', T, async () => {
    const d = path.join(dir, 'rm')
    await sbx.files.write(path.join(d, 'inner/f.txt'), 'x')
    await sbx.files.write(path.join(d, 'g.txt'), 'y')
    await sbx.files.remove(path.join(d, 'g.txt'))
    assert.equal(fs.existsSync(path.join(d, 'g.txt')), false)
    await sbx.files.remove(d)
    assert.equal(fs.existsSync(d), false)
    assert.equal(await sbx.files.exists(d), false)
  })
})

describe('files.watchDir', () => {
  it('reports a file created in the watched directory; stop() ends it', T, async () => {
    const d = path.join(dir, 'watch')
    await sbx.files.makeDir(d)
    const events = []
    const h = await sbx.files.watchDir(d, (e) => events.push(e))
    await sbx.files.write(path.join(d, 'new.txt'), 'hello')
    await waitFor(() => events.some((e) => e.name === 'new.txt' && (e.type === 'create' || e.type === 'write')), {
      what: `an event for new.txt (got ${JSON.stringify(events)})`,
    })
    const ev = events.find((e) => e.name === 'new.txt')
    assert.ok(['create', 'write'].includes(ev.type), `first event type ${ev.type}`)
    await h.stop()
    const n = events.length
    fs.writeFileSync(path.join(d, 'after-stop.txt'), 'x')
    await sleep(300)
    assert.equal(events.length, n, `events after stop(): ${JSON.stringify(events.slice(n))}`)
  })

  it('reports remove and rename events', T, async () => {
    const d = path.join(dir, 'watch2')
    fs.mkdirSync(d)
    fs.writeFileSync(path.join(d, 'gone.txt'), 'x')
    fs.writeFileSync(path.join(d, 'old.txt'), 'x')
    const events = []
    const h = await sbx.files.watchDir(d, (e) => events.push(e))
    try {
      await sbx.files.remove(path.join(d, 'gone.txt'))
      await sbx.files.rename(path.join(d, 'old.txt'), path.join(d, 'renamed.txt'))
      const seen = (name, type) => events.some((e) => e.name === name && e.type === type)
      await waitFor(() => seen('gone.txt', 'remove') && seen('old.txt', 'rename'), {
        what: `remove + rename events (got ${JSON.stringify(events)})`,
      })
    } finally {
      await h.stop()
    }
  })

  it('recursive watch with includeEntry reports nested files with relative names', T, async () => {
    const d = path.join(dir, 'rwatch')
    fs.mkdirSync(path.join(d, 'nested'), { recursive: true })
    const events = []
    const h = await sbx.files.watchDir(d, (e) => events.push(e), { recursive: true, includeEntry: true })
    try {
      await sbx.files.write(path.join(d, 'nested/deep.txt'), 'deep')
      await waitFor(() => events.some((e) => e.name === 'nested/deep.txt'), {
        what: `an event named nested/deep.txt (got ${JSON.stringify(events)})`,
      })
      const ev = events.find((e) => e.name === 'nested/deep.txt' && e.entry)
      assert.ok(ev, `no event with an entry: ${JSON.stringify(events)}`)
      assert.equal(ev.entry.name, 'deep.txt')
      assert.equal(ev.entry.type, 'file')
      assert.equal(ev.entry.path, path.join(d, 'nested/deep.txt'))
      // A directory created after the watch started is watched too.
      await sbx.files.makeDir(path.join(d, 'later'))
      await waitFor(() => events.some((e) => e.name === 'later' && e.type === 'create'), {
        what: `a create event for later/ (got ${JSON.stringify(events)})`,
      })
      await sbx.files.write(path.join(d, 'later/x.txt'), 'x')
      await waitFor(() => events.some((e) => e.name === 'later/x.txt'), {
        what: `an event for later/x.txt (got ${JSON.stringify(events)})`,
      })
    } finally {
      await h.stop()
    }
  })

  it('watching a missing directory throws FileNotFoundError', T, async () => {
    await rejectsWith(sbx.files.watchDir(path.join(dir, 'no-such'), () => {}), FileNotFoundError)
  })

  it('watching a file (not a directory) throws', T, async () => {
    const p = path.join(dir, 'plain.txt')
    fs.writeFileSync(p, 'x')
    await assert.rejects(sbx.files.watchDir(p, () => {}), (err) => {
      assert.ok(err instanceof SandboxError, `expected SandboxError/InvalidArgumentError, got ${describeErr(err)}`)
      assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${describeErr(err)}`)
      return true
    })
  })
})
