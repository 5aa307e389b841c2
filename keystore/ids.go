package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
)

// IDCodec turns counters into key ids and fences into lease tokens, and back.
//
// Each is AES-256 under a secret key applied to a block made of a domain tag and the
// number. A token's block also binds it to its key (32 bits of a hash of the key's
// number, in the upper half of its tag): fences count the leases of one pool, so two
// pools' leases may share a fence, and a token names the one of its key. AES is a permutation, so distinct numbers give distinct strings: ids are
// unique by construction for as long as the counter never repeats, with no tombstones
// kept for deleted keys. Without the secret they are unpredictable. A string that does
// not decrypt to the right domain tag is rejected, so a token is never taken for an id
// nor garbage for either (a random string passes with probability 2^-64).
type IDCodec struct {
	block cipher.Block
}

// SecretSize is the size in bytes of an IDCodec secret.
const SecretSize = 32

// idEncoding is strict so that each id has exactly one spelling.
var idEncoding = base64.RawURLEncoding.Strict()

// IDLength is the length of every key id and lease token: 16 bytes in unpadded base64url.
const IDLength = 22 // base64.RawURLEncoding.EncodedLen(aes.BlockSize)

// Domain tags that keep the id and token spaces apart.
const (
	keyTag       uint64 = 0x6b6579706f6f6c4b // "keypoolK"
	tokenTagHigh uint64 = 0x6b657954         // "keyT", see tokenTag
)

// NewIDCodec returns a codec keyed by secret, which must be SecretSize bytes from a
// cryptographic source. Replicas that share a pool share the secret.
func NewIDCodec(secret []byte) (*IDCodec, error) {
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("id secret must be %d bytes, got %d", SecretSize, len(secret))
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	return &IDCodec{block: block}, nil
}

// NewSecret returns SecretSize bytes from crypto/rand.
func NewSecret() []byte {
	secret := make([]byte, SecretSize)
	rand.Read(secret) // never returns an error; it crashes the program if the OS source fails
	return secret
}

// KeyID returns the id of the key numbered n.
func (c *IDCodec) KeyID(n uint64) string { return c.encode(keyTag, n) }

// ParseKeyID returns the number behind id, or false if id is not a key id of this codec.
func (c *IDCodec) ParseKeyID(id string) (uint64, bool) { return c.decode(keyTag, id) }

// Token returns the token of the lease with the given fence on the key numbered n.
func (c *IDCodec) Token(n uint64, fence int64) string {
	return c.encode(tokenTag(n), uint64(fence))
}

// ParseToken returns the fence behind token, or false if it is not a token of this
// codec for the key numbered n.
func (c *IDCodec) ParseToken(n uint64, token string) (int64, bool) {
	fence, ok := c.decode(tokenTag(n), token)
	return int64(fence), ok
}

// tokenTag is the tag of the tokens of key n: "keyp" and 32 bits of n's hash (a
// multiplicative one: distinct numbers of one pool, or of two, collide once in 2^32).
// Its upper half differs from keyTag's, so no token is ever taken for an id.
func tokenTag(n uint64) uint64 {
	return tokenTagHigh<<32 | (n*0x9e3779b97f4a7c15)>>32
}

// AppendKeyID appends the id of the key numbered n to dst.
func (c *IDCodec) AppendKeyID(dst []byte, n uint64) []byte { return c.appendID(dst, keyTag, n) }

func (c *IDCodec) encode(tag, n uint64) string {
	var block [aes.BlockSize]byte
	c.seal(block[:], tag, n)
	var text [IDLength]byte
	idEncoding.Encode(text[:], block[:])
	return string(text[:])
}

// appendID appends the text of (tag, n). The block is sealed in dst's spare capacity,
// past the text's place, so that no buffer of its own escapes to the heap.
func (c *IDCodec) appendID(dst []byte, tag, n uint64) []byte {
	at := len(dst)
	dst = slices.Grow(dst, IDLength+aes.BlockSize)[:at+IDLength+aes.BlockSize]
	block := dst[at+IDLength:]
	c.seal(block, tag, n)
	idEncoding.Encode(dst[at:at+IDLength], block)
	return dst[:at+IDLength]
}

// seal writes the encrypted block of (tag, n) into block.
func (c *IDCodec) seal(block []byte, tag, n uint64) {
	binary.BigEndian.PutUint64(block[:8], tag)
	binary.BigEndian.PutUint64(block[8:], n)
	c.block.Encrypt(block, block)
}

func (c *IDCodec) decode(tag uint64, s string) (uint64, bool) {
	if len(s) != IDLength {
		return 0, false
	}
	var block [aes.BlockSize]byte
	if n, err := idEncoding.Decode(block[:], []byte(s)); err != nil || n != aes.BlockSize {
		return 0, false
	}
	c.block.Decrypt(block[:], block[:])
	if binary.BigEndian.Uint64(block[:8]) != tag {
		return 0, false
	}
	return binary.BigEndian.Uint64(block[8:]), true
}
