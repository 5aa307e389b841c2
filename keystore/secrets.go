package keystore

import (
	"crypto/hmac"
	"crypto/sha256"
)

// SecretDigest is the keyed hash of an imported key's secret by which its pool finds a
// duplicate: an index of digests, not of secrets, so that whoever reads the index (a
// Redis dump) learns nothing of the secrets, and cannot test a guess without the key.
type SecretDigest [sha256.Size]byte

// SecretHasher computes SecretDigests under one key; every store keys its own (the
// in-memory one per process, a shared one from its secrets key). Safe for concurrent
// use.
type SecretHasher struct{ key []byte }

// NewSecretHasher returns a hasher keyed by key, which it copies.
func NewSecretHasher(key []byte) *SecretHasher {
	return &SecretHasher{key: append([]byte(nil), key...)}
}

// Digest is the keyed hash of secret as a secret of pool: HMAC-SHA256 of the pool's
// name, a zero byte and the secret (a pool name holds no zero byte), so that one
// secret in two pools has two unrelated digests.
func (h *SecretHasher) Digest(pool, secret string) SecretDigest {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(pool))
	mac.Write([]byte{0})
	mac.Write([]byte(secret))
	var d SecretDigest
	mac.Sum(d[:0])
	return d
}
