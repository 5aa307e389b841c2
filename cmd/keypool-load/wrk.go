package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/internal/harness"
)

// cycleScript drives acquire→unblock cycles from wrk (see its comments).
//
//go:embed cycle.lua
var cycleScript []byte

// wrkRun is one wrk run against a target server process.
type wrkRun struct {
	target  string
	url     string // base URL
	script  string // the cycle script's target argument: graphql, rest or plain
	pid     int    // the server's process, whose CPU time is read around the run
	connect int
}

// wrkResult is what the cycle script's done() prints after "RESULT ".
type wrkResult struct {
	Requests     int   `json:"requests"`
	DurationUS   int64 `json:"duration_us"`
	SocketErrors int   `json:"socket_errors"`
	Non2xx       int   `json:"non2xx"`
	Wrong        int   `json:"wrong"`
	P50US        int64 `json:"p50_us"`
	P99US        int64 `json:"p99_us"`
	P999US       int64 `json:"p999_us"`
	MaxUS        int64 `json:"max_us"`
}

// driveWrk runs wrk with one connection per thread for d and returns the result, with
// the CPU the server and wrk each used, in cores (CPU seconds per second).
func driveWrk(ctx context.Context, cfg config, scriptPath string, r wrkRun, d time.Duration) (result, error) {
	serverBefore, err := harness.ProcessCPU(r.pid)
	if err != nil {
		return result{}, err
	}
	args := []string{"-t", strconv.Itoa(r.connect), "-c", strconv.Itoa(r.connect), "-d", fmt.Sprintf("%ds", int(d.Seconds())),
		"--timeout", "5s", "-s", scriptPath, r.url, "--", r.script}
	cmd := pinned(ctx, cfg, driverCPUs, "wrk", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("wrk %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	wall := time.Since(start)
	serverAfter, err := harness.ProcessCPU(r.pid)
	if err != nil {
		return result{}, err
	}
	var w wrkResult
	found := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			if err := json.Unmarshal([]byte(line), &w); err != nil {
				return result{}, fmt.Errorf("wrk's result %q: %v", line, err)
			}
			found = true
		}
	}
	if !found {
		return result{}, fmt.Errorf("wrk printed no result: %s", stdout.String())
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	wrkCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return result{
		target:    r.target,
		requests:  w.Requests,
		errors:    w.SocketErrors + w.Non2xx + w.Wrong,
		elapsed:   us(w.DurationUS),
		p50:       us(w.P50US),
		p99:       us(w.P99US),
		p999:      us(w.P999US),
		pmax:      us(w.MaxUS),
		serverCPU: (serverAfter - serverBefore).Seconds() / wall.Seconds(),
		driverCPU: wrkCPU.Seconds() / wall.Seconds(),
	}, nil
}

// writeScript puts the cycle script where wrk can read it.
func writeScript(dir string) (string, error) {
	path := filepath.Join(dir, "cycle.lua")
	return path, os.WriteFile(path, cycleScript, 0o644)
}

// measureWrk drives every target with wrk, each after a warm-up, and reports. With
// big, a keypool whose pool holds -compare-keys keys, each keypool target is driven
// against big right after it is driven against server, and each such pair's quotients
// are reported: the two runs of a pair are seconds apart, so that a noisy machine's
// drift, which moves rates by more than the pool's size does, falls on both.
func measureWrk(ctx context.Context, cfg config, dir string, out io.Writer, server, big *keypoolProc,
	plainPID int, plain, self string, replySize int) error {
	script, err := writeScript(dir)
	if err != nil {
		return err
	}
	runs := map[string]wrkRun{
		"plain":   {target: "plain", url: plain, script: "plain", pid: plainPID},
		"graphql": {target: "graphql", url: server.base, script: "graphql", pid: server.cmd.Process.Pid},
		"rest":    {target: "rest", url: server.base, script: "rest", pid: server.cmd.Process.Pid},
	}
	twin := func(target string) string { return fmt.Sprintf("%s@%d", target, big.keys) }
	if big != nil {
		for _, target := range []string{"graphql", "rest"} {
			runs[twin(target)] = wrkRun{target: twin(target), url: big.base, script: target, pid: big.cmd.Process.Pid}
		}
	}
	for _, floor := range []struct {
		target, script string
		args           []string
	}{
		{"gqlgen", "graphql", []string{"-serve-gqlgen"}}, {"mux", "rest", []string{"-serve-mux", "-mux-answers", dir}},
	} {
		if !slices.Contains(cfg.targets, floor.target) {
			continue
		}
		cmd, url, err := startHelper(ctx, cfg, self, floor.args...)
		if err != nil {
			return err
		}
		defer harness.StopProcess(cmd, 5*time.Second)
		runs[floor.target] = wrkRun{target: floor.target, url: url, script: floor.script, pid: cmd.Process.Pid}
	}
	placement := "unpinned"
	if cfg.pin {
		placement = "servers on CPU " + serverCPUs + ", wrk on the others"
	}
	pools := fmt.Sprintf("%d keys in the pool", cfg.keys)
	var targets []string // in the order driven
	for _, target := range cfg.targets {
		targets = append(targets, target)
		if _, ok := runs[target]; !ok {
			return fmt.Errorf("unknown target %q (plain, gqlgen, mux, graphql, rest)", target)
		}
		if big != nil && (target == "graphql" || target == "rest") {
			targets = append(targets, twin(target))
		}
	}
	if big != nil {
		pools += fmt.Sprintf(" (%d in the @%d targets')", big.keys, big.keys)
	}
	fmt.Fprintf(out, "keypool-load: wrk, %d connections (one per thread), %v per target after %v warm-up, %s, %d-byte replies, %d CPUs, %s\n",
		cfg.concurrency, cfg.duration, cfg.warmup, pools, replySize, runtime.NumCPU(), placement)
	ratios := map[string][]float64{} // by target, one a round
	rates := map[string][]float64{}
	p99s := map[string][]time.Duration{}
	for round := range max(cfg.rounds, 1) {
		var results []result
		for _, target := range targets {
			run := runs[target]
			run.connect = cfg.concurrency
			if cfg.warmup >= time.Second {
				if _, err := driveWrk(ctx, cfg, script, run, cfg.warmup); err != nil {
					return err
				}
			}
			r, err := driveWrk(ctx, cfg, script, run, cfg.duration)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
		if cfg.rounds > 1 {
			fmt.Fprintf(out, "round %d of %d:\n", round+1, cfg.rounds)
		}
		report(out, results)
		plain := 0.0
		for _, r := range results {
			if r.target == "plain" {
				plain = r.rate()
			}
		}
		for _, r := range results {
			if plain > 0 {
				ratios[r.target] = append(ratios[r.target], r.rate()/plain)
			}
			rates[r.target] = append(rates[r.target], r.rate())
			p99s[r.target] = append(p99s[r.target], r.p99)
		}
	}
	if cfg.rounds > 1 {
		printMedians(out, fmt.Sprintf("median over %d rounds, vs plain (each round's own plain run):", cfg.rounds), targets, ratios)
		beyond := map[string][]float64{} // keypool's ratio over its framework's floor, a round at a time
		for over, floor := range map[string]string{"graphql": "gqlgen", "rest": "mux"} {
			for i := range min(len(ratios[over]), len(ratios[floor])) {
				beyond[over] = append(beyond[over], ratios[over][i]/ratios[floor][i])
			}
		}
		if len(beyond) > 0 {
			printMedians(out, "median vs its framework's floor (graphql/gqlgen, rest/mux):", []string{"graphql", "rest"}, beyond)
		}
	}
	for _, p := range []*keypoolProc{server, big} {
		if p == nil {
			continue
		}
		if rss, err := harness.ProcessRSS(p.cmd.Process.Pid); err == nil {
			fmt.Fprintf(out, "keypool RSS after the run, %d keys: %.1f MiB (%.0f B per key)\n", p.keys, float64(rss)/(1<<20), float64(rss)/float64(max(p.keys, 1)))
		}
	}
	if big != nil {
		// Each pair's quotients, a round at a time, then their medians.
		rate, p99 := map[string][]float64{}, map[string][]float64{}
		var compared []string
		for _, target := range cfg.targets {
			if len(p99s[twin(target)]) == 0 {
				continue
			}
			compared = append(compared, target)
			for i := range p99s[target] {
				rate[target] = append(rate[target], rates[twin(target)][i]/rates[target][i])
				p99[target] = append(p99[target], float64(p99s[twin(target)][i])/float64(p99s[target][i]))
			}
		}
		title := fmt.Sprintf("%d keys vs %d, each pair back to back, median of %d rounds:", big.keys, cfg.keys, max(cfg.rounds, 1))
		printMedians(out, title+" rate", compared, rate)
		printMedians(out, title+" p99", compared, p99)
	}
	return nil
}

// printMedians prints, after title, the median and range of each target's ratios.
func printMedians(out io.Writer, title string, targets []string, ratios map[string][]float64) {
	fmt.Fprint(out, title)
	for _, target := range targets {
		if rs := ratios[target]; len(rs) > 0 {
			fmt.Fprintf(out, " %s %.2f (%.2f–%.2f)", target, median(rs), slices.Min(rs), slices.Max(rs))
		}
	}
	fmt.Fprintln(out)
}

// median returns the middle of vs (the upper one of an even count), 0 for none.
func median[T float64 | time.Duration](vs []T) T {
	if len(vs) == 0 {
		return 0
	}
	sorted := slices.Clone(vs)
	slices.Sort(sorted)
	return sorted[len(sorted)/2]
}
