package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeCurlCommands are the curl commands of the sh blocks of README.md and of the
// pages it links under docs/, continuation lines joined, exactly as written.
func readmeCurlCommands(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	require.NoError(t, err)
	require.NotEmpty(t, pages, "no docs/*.md pages")
	var cmds []string
	for _, page := range append([]string{"README.md"}, pages...) {
		cmds = append(cmds, curlCommands(t, page)...)
	}
	return cmds
}

// curlCommands are the curl commands of one markdown file's sh blocks, continuation
// lines joined, exactly as written.
func curlCommands(t *testing.T, path string) []string {
	t.Helper()
	readme, err := os.ReadFile(path)
	require.NoError(t, err)
	var cmds []string
	inSh, cmd := false, ""
	for line := range strings.SplitSeq(string(readme), "\n") {
		switch {
		case strings.HasPrefix(line, "```"):
			inSh = line == "```sh"
			continue
		case !inSh:
			continue
		}
		if continued, ok := strings.CutSuffix(line, `\`); ok {
			cmd += continued
			continue
		}
		cmd += line
		if strings.HasPrefix(strings.TrimSpace(cmd), "curl ") {
			cmds = append(cmds, strings.TrimSpace(cmd))
		}
		cmd = ""
	}
	return cmds
}

// TestREADMECurlCommands runs every curl command of README.md and docs/*.md, as
// written, against the real server: localhost:8080 (and the replicas' 8081, 8082) stand for the test's
// servers, KEY and TOKEN for a key leased just before. Each must work: curl succeeds,
// nothing answers with an error, and the status it prints, if it prints one, is 2xx.
// It keeps the docs' promise that curl and scripts work as shown.
func TestREADMECurlCommands(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed: apt-get install curl")
	}
	cmds := readmeCurlCommands(t)
	require.GreaterOrEqual(t, len(cmds), 20, "the curl commands of README.md and docs/*.md were not found")

	// -cors-origins as the CORS example of docs/operations.md starts the server.
	main := startServer(t, "-cors-origins", "https://app.example.com")
	servers := map[string]*server{"localhost:8080": main}
	var replicasSkipped string
	if _, err := exec.LookPath("redis-server"); err == nil {
		store := "unix://:" + storeSecret + "@" + startPasswordRedis(t, storeSecret)
		servers["localhost:8081"] = startServer(t, "-store", store)
		servers["localhost:8082"] = startServer(t, "-store", store)
	} else {
		replicasSkipped = "redis-server not installed (apt-get install redis-server): the replicas' commands are skipped"
	}

	for _, cmd := range cmds {
		t.Run(cmd, func(t *testing.T) {
			var s *server
			for addr, srv := range servers {
				if strings.Contains(cmd, addr) {
					s = srv
					cmd = strings.ReplaceAll(cmd, addr, "localhost:"+portOf(t, srv))
				}
			}
			if s == nil {
				require.NotEmpty(t, replicasSkipped, "a command for no server: %s", cmd)
				t.Skip(replicasSkipped)
			}
			// A free key for acquire, and a leased one for KEY and TOKEN.
			s.mustPost(t, `mutation { generateKeys(count: 2) { id } }`, nil, nil)
			var lease struct {
				AcquireKey struct {
					Token string
					Key   struct{ ID string }
				}
			}
			s.mustPost(t, `mutation { acquireKey { token key { id } } }`, nil, &lease)
			cmd = strings.ReplaceAll(cmd, "KEY", lease.AcquireKey.Key.ID)
			cmd = strings.ReplaceAll(cmd, "TOKEN", lease.AcquireKey.Token)

			if strings.Contains(cmd, "text/event-stream") {
				runStreamingCurl(t, s, cmd)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
			defer cancel()
			sh := exec.CommandContext(ctx, "sh", "-c", cmd)
			sh.Dir = t.TempDir() // where -o writes
			out, err := sh.CombinedOutput()
			require.NoError(t, err, "%s", out)
			output := strings.TrimSpace(string(out))
			if fields := strings.Fields(cmd); slices.Contains(fields, "-o") && !strings.Contains(cmd, "-o /dev/null") {
				saved, err := os.ReadFile(filepath.Join(sh.Dir, fields[slices.Index(fields, "-o")+1]))
				require.NoError(t, err, "what -o saved")
				output = strings.TrimSpace(string(saved))
			}
			require.NotEmpty(t, output)
			assert.NotContains(t, output, `"error":{`)
			assert.NotContains(t, output, `"errors":[`)
			if strings.Contains(cmd, "%{http_code}") {
				lines := strings.Split(output, "\n")
				assert.Regexp(t, `^2\d\d$`, lines[len(lines)-1], "the status curl printed")
			}
			if strings.Contains(cmd, " -si ") || strings.Contains(cmd, " -i ") {
				assert.Regexp(t, `^HTTP/1\.1 2\d\d `, output, "the status line")
				if strings.Contains(cmd, "Origin: https://app.example.com") {
					assert.Contains(t, output, "Access-Control-Allow-Origin: https://app.example.com")
				}
			}
		})
	}
}

func portOf(t *testing.T, s *server) string {
	t.Helper()
	i := strings.LastIndexByte(s.url, ':')
	_, err := strconv.Atoi(s.url[i+1:])
	require.NoError(t, err)
	return s.url[i+1:]
}

// runStreamingCurl runs a curl command that follows an SSE subscription and checks
// that it delivers the event of a key generated meanwhile.
func runStreamingCurl(t *testing.T, s *server, cmd string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	defer cancel()
	curl := exec.CommandContext(ctx, "sh", "-c", "exec "+cmd)
	stdout, err := curl.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, curl.Start())
	defer func() {
		cancel()
		_ = curl.Wait()
	}()
	data := make(chan string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if line := lines.Text(); strings.HasPrefix(line, "data:") {
				data <- line
				return
			}
		}
		close(data)
	}()
	// The subscription goes live some time after curl starts: generate until it hears.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case line, ok := <-data:
			require.True(t, ok, "the stream ended without an event")
			assert.Contains(t, line, `"keyEvents"`)
			assert.NotContains(t, line, `"errors"`)
			return
		case <-tick.C:
			s.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, nil)
		case <-ctx.Done():
			t.Fatal("no event on the stream")
		}
	}
}

// TestREADMEGoQuickStart builds and runs the Go program of README.md's quick start, as
// written but for the server's address, against the real server: it must lease a key
// and print its secret and fence, as the README says.
func TestREADMEGoQuickStart(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "```go\n")
	require.True(t, ok, "README.md has no Go program")
	program, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	require.Contains(t, program, `client.New("http://localhost:8080")`)

	s := startServer(t)
	program = strings.ReplaceAll(program, "http://localhost:8080", s.url)
	// In a directory of this module (go ./... skips names that begin with "_"), so that
	// the program's import of the client package resolves to this tree.
	dir, err := os.MkdirTemp(".", "_readme_go_")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "run", "./"+filepath.Base(dir)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `^calling the upstream with \S+ fence 1\n$`, string(out))
}
