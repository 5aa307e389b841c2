package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want Info
		line string
	}{{
		name: "a tagged module version from go install",
		bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/keypool/keypool", Version: "v1.2.0"}},
		want: Info{Version: "v1.2.0", GoVersion: "go1.26.8"},
		line: "v1.2.0 go1.26.8",
	}, {
		name: "a checkout, built with git",
		bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261207153200-29fad67abcde"}, Settings: []debug.BuildSetting{
			{Key: "-trimpath", Value: "true"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "29fad67abcde0123456789abcdef0123456789ab"},
			{Key: "vcs.time", Value: "2026-12-07T15:32:00Z"},
			{Key: "vcs.modified", Value: "false"},
		}},
		want: Info{Version: "v0.0.0-20261207153200-29fad67abcde", Revision: "29fad67abcde0123456789abcdef0123456789ab", Time: "2026-12-07T15:32:00Z", GoVersion: "go1.26.8"},
		line: "v0.0.0-20261207153200-29fad67abcde (revision 29fad67abcde0123456789abcdef0123456789ab, 2026-12-07T15:32:00Z) go1.26.8",
	}, {
		name: "uncommitted changes",
		bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "29fad67"},
			{Key: "vcs.modified", Value: "true"},
		}},
		want: Info{Version: Devel, Revision: "29fad67-modified", GoVersion: "go1.26.8"},
		line: "(devel) (revision 29fad67-modified) go1.26.8",
	}, {
		name: "go run or go test: no version, no VCS",
		bi:   &debug.BuildInfo{GoVersion: "go1.26.8"},
		want: Info{Version: Devel, GoVersion: "go1.26.8"},
		line: "(devel) go1.26.8",
	}, {
		name: "no build information",
		want: Info{Version: Devel, GoVersion: "unknown"},
		line: "(devel) unknown",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := From(tc.bi)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.line, got.String())
		})
	}
}

func TestRead(t *testing.T) {
	info := Read()
	assert.Equal(t, runtime.Version(), info.GoVersion)
	assert.NotEmpty(t, info.Version)
}
