package middleware

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// sniffBytes bounds how far JSONBodies looks into a form-encoded body for the start of
// a JSON value (past white space).
const sniffBytes = 4 << 10

// JSONBodies refuses, with 415 and wire.CodeUnsupportedMediaType through refuse, a request
// that may change state (see changesState) and has a body not declared as JSON. HTML
// forms can send a body of another type (text/plain, a form, multipart) to any site
// without a preflight; fetch and XMLHttpRequest can send application/json only after
// one. So:
//
//   - Content-Type application/json (or any application/*+json) passes;
//   - no Content-Type passes only with an empty body (curl -X POST …/acquire);
//   - application/x-www-form-urlencoded, curl's default for -d, passes only if the
//     body is a JSON object or array: `curl -d '{"count":3}'`. A form cannot send that
//     (it percent-encodes '{' and '['), and a page's script that does carries an
//     Origin, which Browsers checks;
//   - anything else is refused.
func JSONBodies(refuse ErrorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !changesState(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		contentType := r.Header.Get("Content-Type")
		if contentType == "application/json" { // the usual case, with nothing to parse
			next.ServeHTTP(w, r)
			return
		}
		var mediaType string
		if contentType != "" {
			var err error
			if mediaType, _, err = mime.ParseMediaType(contentType); err != nil {
				refuse(w, r, http.StatusUnsupportedMediaType, wire.CodeUnsupportedMediaType,
					fmt.Sprintf("Content-Type %q does not parse; send JSON with Content-Type: application/json", echo(contentType)))
				return
			}
		}
		switch {
		case isJSONType(mediaType):
			next.ServeHTTP(w, r)
			return
		case mediaType == "" || mediaType == "application/x-www-form-urlencoded":
			start, err := sniff(r)
			if err != nil {
				refuse(w, r, http.StatusBadRequest, keystore.EINVALID, "could not read the request body: "+bodyError(err))
				return
			}
			if mediaType == "" && start == none || mediaType != "" && (start == '{' || start == '[') {
				next.ServeHTTP(w, r)
				return
			}
		}
		shown := mediaType
		if shown == "" {
			shown = "none"
		}
		refuse(w, r, http.StatusUnsupportedMediaType, wire.CodeUnsupportedMediaType,
			fmt.Sprintf("a request body must be JSON, sent with Content-Type: application/json (got Content-Type %s)", echo(shown)))
	})
}

// isJSONType reports whether a media type (lower case, without parameters) is JSON.
func isJSONType(mediaType string) bool {
	return mediaType == "application/json" ||
		strings.HasPrefix(mediaType, "application/") && strings.HasSuffix(mediaType, "+json")
}

// none is sniff's answer for an empty body.
const none = -1

// sniff returns the first byte of r's body that is not JSON white space, or none for
// an empty body (or one of white space only), and leaves the body to be read whole.
func sniff(r *http.Request) (int, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return none, nil
	}
	body := bufio.NewReaderSize(r.Body, sniffBytes)
	r.Body = struct {
		io.Reader
		io.Closer
	}{body, r.Body}
	for n := 1; n <= sniffBytes; n++ {
		peeked, err := body.Peek(n)
		if len(peeked) < n {
			if err == io.EOF {
				return none, nil
			}
			return none, err
		}
		if c := peeked[n-1]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return int(c), nil
		}
	}
	return ' ', nil // white space only, for longer than any JSON body starts with
}

// bodyError words a body's read error for the client.
func bodyError(err error) string {
	if _, ok := errors.AsType[*BodyTimeoutError](err); ok {
		return err.Error()
	}
	return "the connection failed"
}
