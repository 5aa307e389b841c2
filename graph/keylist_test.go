package graph_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestGenerateKeysAnswersAsGqlgen: generateKeys' answer is written by hand from the
// keys (keylist.go); for every selection it must be, byte for byte, what gqlgen's
// executor writes for the same keys, which the key query still answers through it.
func TestGenerateKeysAnswersAsGqlgen(t *testing.T) {
	selections := []struct{ name, selection, fragments string }{
		{name: "one field", selection: "id"},
		{name: "every field", selection: `id pool status createdAt expiresAt __typename
			lease { token fence acquiredAt expiresAt key { id } }
			history { timesAcquired leasesExpired lastAcquiredAt __typename }`},
		{name: "aliases and repeats", selection: "b: id a: id id status b: id history { x: timesAcquired } history { lastAcquiredAt }"},
		{name: "fragments", selection: "...K ... on Key { status history { ...H } } ... { createdAt }",
			fragments: "fragment K on Key { id history { ...H } } fragment H on KeyHistory { leasesExpired }"},
		{name: "skip and include", selection: `id @skip(if: $yes) status @include(if: $yes) createdAt @include(if: $no)
			... on Key @skip(if: $yes) { expiresAt } history @include(if: $yes) { timesAcquired @skip(if: $no) }`},
		{name: "typename only", selection: "__typename"},
	}
	for _, s := range selections {
		t.Run(s.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			vars := map[string]any{"yes": true, "no": false}
			resp := e.post(t, `mutation($yes: Boolean!, $no: Boolean!) { g: generateKeys(count: 3) { kid: id tn: __typename @include(if: $yes) @skip(if: $no) `+s.selection+` } } `+s.fragments, vars)
			require.Empty(t, resp.Errors)
			var generated struct{ G []json.RawMessage }
			resp.decode(t, &generated)
			require.Len(t, generated.G, 3)
			for i, raw := range generated.G {
				var key struct{ Kid string }
				require.NoError(t, json.Unmarshal(raw, &key))
				got := e.post(t, `query($id: ID!, $yes: Boolean!, $no: Boolean!) { k: key(id: $id) { kid: id tn: __typename @include(if: $yes) @skip(if: $no) `+s.selection+` } } `+s.fragments,
					map[string]any{"id": key.Kid, "yes": true, "no": false})
				require.Empty(t, got.Errors)
				var viaGqlgen struct{ K json.RawMessage }
				got.decode(t, &viaGqlgen)
				require.Equal(t, string(viaGqlgen.K), string(raw), "key %d", i)
			}
		})
	}
}
