package redisstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/keypool/keypool/keystore"
)

// SecretsKeySize is the size of the secrets key, in bytes (AES-256).
const SecretsKeySize = 32

// WithSecretsKey gives the store the key that seals imported secrets (SecretsKeySize
// bytes): without it, Import is refused. The key never goes to Redis; a check value
// derived from it does, so that a replica with another key refuses to start.
func WithSecretsKey(key []byte) Option {
	return func(c *config) { c.secretsKey = append([]byte(nil), key...) }
}

// secretsKeyFlag names the setting of the secrets key in messages and in the
// namespace's settings, where its check value is recorded.
const secretsKeyFlag = "-secrets-key-file"

// errNoSecretsKey refuses an import on a replica without a secrets key.
var errNoSecretsKey = keystore.Errorf(keystore.ENOTCONFIGURED,
	"importKeys on a Redis store needs a secrets key, which seals the secrets in Redis: start every replica with "+
		secretsKeyFlag+" (KEYPOOL_SECRETS_KEY_FILE), a file of 32 random bytes in base64")

// sealer seals imported secrets for Redis, and computes their digests, under keys
// derived from the secrets key: AES-256-GCM with the pool's name and the key's id as
// associated data, so that a sealed secret moved to another key or pool does not open.
type sealer struct {
	aead   cipher.AEAD
	hasher *keystore.SecretHasher
	// check is recorded with the namespace: a replica whose key gives another refuses
	// to start.
	check string
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != SecretsKeySize {
		return nil, fmt.Errorf("redis store: the secrets key (%s) must be %d bytes, got %d", secretsKeyFlag, SecretsKeySize, len(key))
	}
	// One key for each use, each an HMAC of a fixed label under the secrets key.
	derive := func(label string) []byte {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(label))
		return mac.Sum(nil)
	}
	block, err := aes.NewCipher(derive("keypool: seal imported secrets"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{
		aead:   aead,
		hasher: keystore.NewSecretHasher(derive("keypool: digest imported secrets")),
		check:  hex.EncodeToString(derive("keypool: check the secrets key")),
	}, nil
}

// boundTo is the associated data of a sealed secret: the pool's name, a zero byte (no
// pool name holds one) and the key's id.
func boundTo(pool, keyID string) []byte {
	return append(append([]byte(pool), 0), keyID...)
}

// seal returns secret sealed for key keyID of pool, in base64: a random nonce, then the
// ciphertext and its tag.
func (s *sealer) seal(pool, keyID, secret string) string {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(secret)+s.aead.Overhead())
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(secret), boundTo(pool, keyID)))
}

// errSealed: a sealed secret that does not open (another key, or moved between keys).
var errSealed = errors.New("redis store: an imported key's secret does not open under this replica's secrets key (" + secretsKeyFlag + ")")

// open returns the secret that sealed holds for key keyID of pool.
func (s *sealer) open(pool, keyID, sealed string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", errSealed
	}
	n := s.aead.NonceSize()
	secret, err := s.aead.Open(nil, raw[:n], raw[n:], boundTo(pool, keyID))
	if err != nil {
		return "", errSealed
	}
	return string(secret), nil
}

// digest is the hex of the keyed hash by which pool finds secret's key.
func (s *sealer) digest(pool, secret string) string {
	d := s.hasher.Digest(pool, secret)
	return hex.EncodeToString(d[:])
}

// open returns the secret sealed in sealed for key n of p.
func (s *Store) open(p *rpool, n uint64, sealed string) (string, error) {
	if s.sealer == nil {
		return "", keystore.Errorf(keystore.ENOTCONFIGURED,
			"an imported key's secret is sealed under a secrets key this replica was not given: restart it with "+secretsKeyFlag)
	}
	return s.sealer.open(p.name, s.ids.KeyID(n), sealed)
}

// Import implements keystore.Backend. The secrets are sealed here, bound to their keys'
// ids, so the key numbers are reserved first (a reservation that an import refused
// leaves unused, as key numbers are never used twice); then one script checks the
// digests and makes the keys.
func (s *Store) Import(ctx context.Context, pool string, keys []keystore.KeyInput, keepAliveTTL time.Duration) ([]keystore.Record, error) {
	if s.sealer == nil {
		return nil, errNoSecretsKey
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	if err := s.refusingChanges(); err != nil {
		return nil, err // before the pool is made
	}
	digests := make([]string, len(keys))
	for i, k := range keys {
		digests[i] = s.sealer.digest(pool, k.Secret)
	}
	p, err := s.poolNamed(ctx, pool, false)
	if err != nil {
		return nil, err
	}
	if p == nil {
		// A new pool holds no secret: only a repeat within keys is a duplicate, and it
		// makes no pool.
		seen := make(map[string]struct{}, len(keys))
		for i, d := range digests {
			if _, again := seen[d]; again {
				return nil, &keystore.DuplicateError{Index: i}
			}
			seen[d] = struct{}{}
		}
		if p, err = s.poolNamed(ctx, pool, true); err != nil {
			return nil, err
		}
	}
	res, _, err := s.run(ctx, p, s.scripts.reserve, mutation, len(keys))
	if err != nil {
		return nil, err
	}
	if res[0] == statusExhausted {
		return nil, errExhausted(pool)
	}
	if len(res) != 3 {
		return nil, fmt.Errorf("redis store: bad reserve reply %v", res)
	}
	first := res[2]
	args := make([]any, 0, 3+3*len(keys))
	args = append(args, first, len(keys), s.units(keepAliveTTL))
	for i, k := range keys {
		keyID := s.ids.KeyID(p.keyN(first + int64(i)))
		args = append(args, digests[i], k.Name, s.sealer.seal(pool, keyID, k.Secret))
	}
	res, _, err = s.run(ctx, p, s.scripts.importKeys, mutation, args...)
	if err != nil {
		return nil, err
	}
	if res[0] == statusDuplicate && len(res) == 3 {
		return nil, &keystore.DuplicateError{Index: int(res[2])}
	}
	if res[0] != statusOK || len(res) != 3 {
		return nil, fmt.Errorf("redis store: bad import reply %v", res)
	}
	now, expires := res[1], res[2]
	expiresAt := keystore.Never
	if expires < forever {
		expiresAt = s.at(expires)
		s.wakeBy(p, expires)
	}
	recs := make([]keystore.Record, len(keys))
	for i, k := range keys {
		n := p.keyN(first + int64(i))
		recs[i] = keystore.Record{N: n, Pos: n, Pool: pool, CreatedAt: s.at(now), ExpiresAt: expiresAt,
			Ext: &keystore.RecordExt{Name: k.Name}}
	}
	return recs, nil
}
