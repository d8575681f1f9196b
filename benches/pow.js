// The /new form's proof of work (src/transports/web/static/pow.js) in V8,
// Chromium's engine: checks its SHA-256 against node's, then prints the
// median time to 20 bits over 9 challenges and the hash rate. Run: node benches/pow.js
global.document = { getElementById: () => null };
const src = require('fs').readFileSync(require('path').join(__dirname, '../src/transports/web/static/pow.js'), 'utf8');
new Function('document', src.replace('var form = document', 'globalThis.__s = sha256; globalThis.__solve = solve; globalThis.__z = zeroBits; var form = document'))(global.document);
const crypto = require('crypto');
for (const m of ['', 'abc', 'x'.repeat(55), 'y'.repeat(64), 'z'.repeat(119), 'q'.repeat(200)]) {
  const b = new Uint8Array(m.length + 72); b.set(Buffer.from(m));
  const hex = Array.from(__s(b, m.length, [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19], 0)).map(x => (x >>> 0).toString(16).padStart(8, '0')).join('');
  if (hex !== crypto.createHash('sha256').update(m).digest('hex')) throw new Error('mismatch ' + m.length);
}
const ch = '1764770000.0123456789abcdef.20.' + 'A'.repeat(43);
const times = [];
for (let r = 0; r < 9; r++) {
  const c = ch + r; const t = Date.now(); const n = __solve(c, 20);
  const d = crypto.createHash('sha256').update(c + ':' + n).digest();
  if (d[0] !== 0 || d[1] !== 0 || d[2] >= 16) throw new Error('bad answer');
  times.push([(Date.now() - t) / 1000, Number(n)]);
}
const secs = times.map(t => t[0]).sort((a, b) => a - b); const hashes = times.reduce((a, t) => a + t[1], 0);
console.log('20 bits, 9 challenges: median', secs[4], 's; hashes/s', Math.round(hashes / times.reduce((a, t) => a + t[0], 0)));
