package resttest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool/rest/resttest"
)

const (
	keyJSON = `{"id":"Zx9_-aQ3kLmN0pRsTuVwXy","pool":"default","status":"AVAILABLE","createdAt":"2026-11-24T13:00:00.123456789Z",` +
		`"expiresAt":"2026-11-24T13:05:00.123456789Z","lease":null,"coolingUntil":null,"name":null,"history":{"timesAcquired":0,"leasesExpired":0,"lastAcquiredAt":null,"failures":0,"consecutiveFailures":0}}`
	leaseFields = `"token":"Tk4_pQ2rS7uVwXyZ01aB3c","fence":7,"fence64":"7","acquiredAt":"2026-11-24T13:01:00.25Z","expiresAt":"2026-11-24T13:02:00.25Z","holder":null,"secret":null`
	blockedJSON = `{"id":"Zx9_-aQ3kLmN0pRsTuVwXy","pool":"default","status":"BLOCKED","createdAt":"2026-11-24T13:00:00.123456789Z",` +
		`"expiresAt":"2026-11-24T13:05:00.123456789Z","lease":{` + leaseFields + `},"coolingUntil":null,"name":null,"history":{"timesAcquired":1,"leasesExpired":0,"lastAcquiredAt":"2026-11-24T13:01:00.25Z","failures":0,"consecutiveFailures":0}}`
	leaseJSON = `{` + leaseFields + `,"key":` + blockedJSON + `}`
)

func errorJSON(code string) string { return `{"error":{"code":"` + code + `","message":"m"}}` }

// exchange is a request and the answer a made-up server gives it.
type exchange struct {
	method, target, contentType, body string
	status                            int
	header                            map[string]string
	answer                            string
}

func (c exchange) check(t *testing.T) error {
	t.Helper()
	v, err := resttest.Load()
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	header := http.Header{}
	if c.answer != "" {
		header.Set("Content-Type", "application/json")
	}
	for name, value := range c.header {
		header.Set(name, value)
	}
	return v.Check(context.Background(), resttest.Exchange{
		Request: req, RequestBody: []byte(c.body), Status: c.status, Header: header, Body: []byte(c.answer),
	})
}

// TestCheckAccepts: answers as the document describes them pass.
func TestCheckAccepts(t *testing.T) {
	for name, c := range map[string]exchange{
		"generate":             {method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"count":1}`, status: 201, answer: `{"keys":[` + keyJSON + `]}`},
		"generate, no body":    {method: "POST", target: "/v1/keys", status: 201, answer: `{"keys":[` + keyJSON + `]}`},
		"generate, curl -d":    {method: "POST", target: "/v1/keys", contentType: "application/x-www-form-urlencoded", body: `{"count":1}`, status: 201, answer: `{"keys":[` + keyJSON + `]}`},
		"generate, over max":   {method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"count":10001}`, status: 400, answer: errorJSON("BAD_USER_INPUT")},
		"acquire":              {method: "POST", target: "/v1/keys/acquire?ttl=90s&wait=1.5s", status: 200, answer: leaseJSON},
		"acquire, none free":   {method: "POST", target: "/v1/keys/acquire", status: 404, answer: errorJSON("NOT_FOUND")},
		"acquire, shutdown":    {method: "POST", target: "/v1/keys/acquire?wait=5s", status: 503, answer: errorJSON("UNAVAILABLE")},
		"acquire, ttl 0s":      {method: "POST", target: "/v1/keys/acquire?ttl=0s", status: 400, answer: errorJSON("BAD_USER_INPUT")},
		"acquire, cross-site":  {method: "POST", target: "/v1/keys/acquire", status: 403, answer: errorJSON("FORBIDDEN")},
		"generate, text/plain": {method: "POST", target: "/v1/keys", contentType: "text/plain", body: `{"count":1}`, status: 415, answer: errorJSON("UNSUPPORTED_MEDIA_TYPE")},
		"get":                  {method: "GET", target: "/v1/keys/Zx9_-aQ3kLmN0pRsTuVwXy", status: 200, answer: blockedJSON},
		"get, HEAD":            {method: "HEAD", target: "/v1/keys/Zx9_-aQ3kLmN0pRsTuVwXy", status: 200},
		"get acquire":          {method: "GET", target: "/v1/keys/acquire", status: 404, answer: errorJSON("NOT_FOUND")},
		"delete":               {method: "DELETE", target: "/v1/keys/x", status: 204},
		"unblock, conflict":    {method: "POST", target: "/v1/keys/x/unblock", contentType: "application/json", body: `{"token":"t"}`, status: 409, answer: errorJSON("LEASE_MISMATCH")},
		"renew":                {method: "POST", target: "/v1/keys/x/renew", contentType: "application/json", body: `{"token":"t","ttl":"1m30s"}`, status: 200, answer: leaseJSON},
		"renew, ttl null":      {method: "POST", target: "/v1/keys/x/renew", contentType: "application/json", body: `{"token":"t","ttl":null}`, status: 200, answer: leaseJSON},
		"stats":                {method: "GET", target: "/v1/stats", status: 200, answer: `{"total":1,"available":1,"blocked":0,"cooling":0,"quarantined":0,"waiting":0}`},
		"no route":             {method: "GET", target: "/v1/nope", status: 404, answer: errorJSON("NOT_FOUND")},
		"no route, too large":  {method: "POST", target: "/v1/nope", status: 413, answer: errorJSON("REQUEST_TOO_LARGE")},
		"wrong method":         {method: "PUT", target: "/v1/keys", status: 405, header: map[string]string{"Allow": "POST"}, answer: errorJSON("METHOD_NOT_ALLOWED")},
		"healthz":              {method: "GET", target: "/healthz", status: 200, header: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, answer: "ok\n"},
		"readyz, internal":     {method: "GET", target: "/readyz", status: 503, answer: errorJSON("INTERNAL_SERVER_ERROR")},
		"not covered":          {method: "GET", target: "/graphql", status: 500, answer: "anything"},
		"unclean path":         {method: "DELETE", target: "/v1/keys/x/..", status: 404, answer: errorJSON("NOT_FOUND")},
		"empty segment":        {method: "GET", target: "/v1//stats", status: 404, answer: errorJSON("NOT_FOUND")},
		"the subtree":          {method: "GET", target: "/v1", status: 404, answer: errorJSON("NOT_FOUND")},
		"CORS preflight":       {method: "OPTIONS", target: "/v1/keys", status: 204, header: map[string]string{"Access-Control-Request-Method": "POST"}},
	} {
		t.Run(name, func(t *testing.T) {
			if c.header["Access-Control-Request-Method"] != "" { // a request header, not an answer's
				v, _ := resttest.Load()
				req := httptest.NewRequest(c.method, c.target, nil)
				req.Header.Set("Access-Control-Request-Method", "POST")
				if err := v.Check(context.Background(), resttest.Exchange{Request: req, Status: c.status, Header: http.Header{}}); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err := c.check(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCheckRefuses: each kind of drift from the document is caught.
func TestCheckRefuses(t *testing.T) {
	for name, c := range map[string]exchange{
		"undocumented status":         {method: "POST", target: "/v1/keys", status: 200, answer: `{"keys":[` + keyJSON + `]}`},
		"a field renamed":             {method: "GET", target: "/v1/stats", status: 200, answer: `{"total":1,"available":1,"blockd":0,"waiting":0}`},
		"a field added":               {method: "GET", target: "/v1/stats", status: 200, answer: `{"total":1,"available":1,"blocked":0,"cooling":0,"quarantined":0,"waiting":0,"extra":1}`},
		"a field missing":             {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(keyJSON, `"lease":null,`, "", 1)},
		"a time not in UTC":           {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(keyJSON, "13:00:00.123456789Z", "14:00:00.123456789+01:00", 1)},
		"a bad status value":          {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(keyJSON, "AVAILABLE", "FREE", 1)},
		"a lease with its key":        {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(blockedJSON, `"fence":7,`, `"fence":7,"key":null,`, 1)},
		"not JSON":                    {method: "GET", target: "/v1/stats", status: 200, header: map[string]string{"Content-Type": "text/plain"}, answer: "3 keys"},
		"an error without code":       {method: "GET", target: "/v1/keys/x", status: 404, answer: `{"error":{"message":"m"}}`},
		"an unknown code":             {method: "GET", target: "/v1/keys/x", status: 404, answer: errorJSON("GONE")},
		"a code of another status":    {method: "GET", target: "/v1/keys/x", status: 404, answer: errorJSON("LEASE_MISMATCH")},
		"a plain-text error":          {method: "GET", target: "/v1/keys/x", status: 404, header: map[string]string{"Content-Type": "text/plain"}, answer: "404 page not found"},
		"204 with a body":             {method: "DELETE", target: "/v1/keys/x", status: 204, answer: `{}`},
		"an unknown field accepted":   {method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"cnt":3}`, status: 201, answer: `{"keys":[` + keyJSON + `]}`},
		"bad JSON accepted":           {method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"count":`, status: 201, answer: `{"keys":[` + keyJSON + `]}`},
		"a bad duration accepted":     {method: "POST", target: "/v1/keys/acquire?ttl=soon", status: 200, answer: leaseJSON},
		"a negative wait accepted":    {method: "POST", target: "/v1/keys/acquire?wait=-1s", status: 200, answer: leaseJSON},
		"renew without token":         {method: "POST", target: "/v1/keys/x/renew", contentType: "application/json", body: `{}`, status: 200, answer: leaseJSON},
		"renew, a bad ttl accepted":   {method: "POST", target: "/v1/keys/x/renew", contentType: "application/json", body: `{"token":"t","ttl":"soon"}`, status: 200, answer: leaseJSON},
		"renew, a ttl not a string":   {method: "POST", target: "/v1/keys/x/renew", contentType: "application/json", body: `{"token":"t","ttl":90}`, status: 200, answer: leaseJSON},
		"a lease missing a field":     {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(blockedJSON, `"fence":7,`, ``, 1)},
		"a lease not an object":       {method: "GET", target: "/v1/keys/x", status: 200, answer: strings.Replace(keyJSON, `"lease":null`, `"lease":"Tk4_pQ2rS7uVwXyZ01aB3c"`, 1)},
		"a body where none is read":   {method: "POST", target: "/v1/keys/x/keepalive", contentType: "application/json", body: `{"x":1}`, status: 200, answer: keyJSON},
		"a bad request as a 5xx":      {method: "POST", target: "/v1/keys", contentType: "application/json", body: `[`, status: 500, answer: errorJSON("INTERNAL_SERVER_ERROR")},
		"a route not in the doc":      {method: "GET", target: "/v1/keys", status: 200, answer: `{"keys":[]}`},
		"405 without Allow":           {method: "PUT", target: "/v1/keys", status: 405, answer: errorJSON("METHOD_NOT_ALLOWED")},
		"HEAD 405 without Allow":      {method: "HEAD", target: "/v1/keys", status: 405},
		"no route as 500":             {method: "GET", target: "/v1/nope", status: 500, answer: errorJSON("INTERNAL_SERVER_ERROR")},
		"healthz as JSON":             {method: "GET", target: "/healthz", status: 200, answer: `{"ok":true}`},
		"a redirect of a clean path":  {method: "GET", target: "/v1/stats", status: 301, header: map[string]string{"Location": "/v1/stats/"}},
		"a redirect elsewhere":        {method: "DELETE", target: "/v1/keys/x/..", status: 301, header: map[string]string{"Location": "/v1/stats"}},
		"net/http's unclean redirect": {method: "GET", target: "/v1//stats", status: 307, header: map[string]string{"Location": "/v1/stats", "Content-Type": "text/html; charset=utf-8"}, answer: `<a href="/v1/stats">Temporary Redirect</a>.`},
		"net/http's subtree redirect": {method: "GET", target: "/v1", status: 307, header: map[string]string{"Location": "/v1/"}},
		"a redirect to /v1":           {method: "GET", target: "/x/../v1/stats", status: 307, header: map[string]string{"Location": "/v1/stats"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := c.check(t)
			if err == nil {
				t.Fatal("passed")
			}
			t.Log(err)
		})
	}
}
