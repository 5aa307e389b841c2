package main

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keypool/keypool/rest/resttest"
)

// TestBrowserRESTDocs opens the REST API's page at /v1/docs: it renders every
// operation of the OpenAPI document, loading nothing but the page and the document
// from this server (newBrowser fails the test on any other request, and on a
// Content-Security-Policy violation).
func TestBrowserRESTDocs(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	v, err := resttest.Load()
	if err != nil {
		t.Fatal(err)
	}
	var operationIDs []string
	for _, item := range v.Document().Paths.Map() {
		for _, op := range item.Operations() {
			operationIDs = append(operationIDs, op.OperationID)
		}
	}
	server := startBrowserServer(t)
	b := newBrowser(t, chromium, server)

	b.do("open /v1/docs", chromedp.Navigate(server.URL+"/v1/docs"))
	waitFor[bool](b, "the rendered document", `document.body.dataset.rendered === 'true'`)
	for _, id := range operationIDs {
		if !eval[bool](b, `!!document.getElementById(`+jsString(id)+`)`) {
			t.Errorf("no section for operation %s", id)
		}
	}
	if n := eval[int](b, `document.querySelectorAll('#toc a[href^="#"]').length`); n < len(operationIDs) {
		t.Errorf("the table of contents links %d operations, want %d", n, len(operationIDs))
	}
	curl := eval[string](b, `document.querySelector('#generateKeys pre').textContent`)
	if want := "curl -s -X POST '" + server.URL + "/v1/keys' -H 'Content-Type: application/json' -d '{\"count\":3}'"; curl != want {
		t.Errorf("generateKeys' curl line is %q, want %q", curl, want)
	}
	if !b.sawRequest(server.URL + "/v1/openapi.json") {
		t.Error("the page did not load /v1/openapi.json")
	}
	b.screenshots("rest-docs")
	if *docsScreenshots {
		b.docsScreenshot("rest-docs")
	}
}

func jsString(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`) + "'"
}
