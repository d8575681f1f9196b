// postdesk: the /new form's proof of work, served only when [web]
// proof_of_work is set. When the form is sent, it finds the first number n
// for which SHA-256(challenge + ":" + n) starts with `bits` zero bits, puts
// it in the form, and sends it. Plain SHA-256, no library, no network.
(function () {
  "use strict";
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var w = new Int32Array(64);
  var H = new Int32Array(8);

  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

  // One SHA-256 block of b at offset o into the state H.
  function compress(b, o) {
    var i;
    for (i = 0; i < 16; i++) {
      var p = o + 4 * i;
      w[i] = (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3];
    }
    for (i = 16; i < 64; i++) {
      var x = w[i - 15], y = w[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    var a = H[0], c1 = H[1], c2 = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (i = 0; i < 64; i++) {
      var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      var ch = (e & f) ^ (~e & g);
      var t1 = (h + S1 + ch + K[i] + w[i]) | 0;
      var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      var mj = (a & c1) ^ (a & c2) ^ (c1 & c2);
      var t2 = (S0 + mj) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0;
      d = c2; c2 = c1; c1 = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + c1) | 0; H[2] = (H[2] + c2) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  // SHA-256 of the first l bytes of b, into H, from the state `from` after
  // the blocks before offset `start` (IV and 0 for a whole hash). b must
  // have room for the padding (l + 72 bytes); the bytes after l are overwritten.
  function sha256(b, l, from, start) {
    var n = ((l + 9 + 63) >> 6) << 6;
    b[l] = 0x80;
    for (var z = l + 1; z < n; z++) b[z] = 0;
    var bitLength = l * 8;
    b[n - 4] = (bitLength >>> 24) & 255;
    b[n - 3] = (bitLength >>> 16) & 255;
    b[n - 2] = (bitLength >>> 8) & 255;
    b[n - 1] = bitLength & 255;
    for (var k = 0; k < 8; k++) H[k] = from[k];
    for (var o = start; o < n; o += 64) compress(b, o);
    return H;
  }

  // The first n for which SHA-256(challenge ":" n) has `bits` leading zero
  // bits, hashing in one buffer that only the digits change in, from the
  // state after the challenge's whole blocks (computed once).
  function solve(challenge, bits) {
    var prefix = new TextEncoder().encode(challenge + ":");
    var b = new Uint8Array(prefix.length + 20 + 72);
    b.set(prefix);
    var start = prefix.length - (prefix.length % 64);
    for (var k = 0; k < 8; k++) H[k] = IV[k];
    for (var o = 0; o < start; o += 64) compress(b, o);
    var mid = Array.prototype.slice.call(H);
    for (var n = 0; ; n++) {
      var l = prefix.length;
      var s = String(n);
      for (var j = 0; j < s.length; j++) b[l + j] = s.charCodeAt(j);
      if (zeroBits(sha256(b, l + s.length, mid, start)) >= bits) return s;
    }
  }

  function zeroBits(H) {
    var bits = 0;
    for (var i = 0; i < 8; i++) {
      var z = Math.clz32(H[i]);
      bits += z;
      if (z < 32) break;
    }
    return bits;
  }

  var form = document.getElementById("new-request");
  if (!form || !form.elements.pow_challenge) return;
  var status = document.getElementById("pow-status");
  var sending = false;
  form.addEventListener("submit", function (event) {
    if (sending) return;
    event.preventDefault();
    sending = true;
    status.textContent = "Checking your browser, a moment…";
    // Let the page show the words before the work starts.
    setTimeout(function () {
      form.elements.pow.value = solve(form.elements.pow_challenge.value, parseInt(form.elements.pow_bits.value, 10));
      status.textContent = "Sending…";
      form.submit();
    }, 20);
  });
})();
