// Package buildinfo reads what the Go toolchain recorded in the binary about its own
// build (runtime/debug.ReadBuildInfo): the main module's version, the VCS revision and
// commit time, and the Go version. keypool -version, keypoolctl -version and the
// keypool_build_info metric all read it here.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Devel is the version of a binary built from a work tree rather than fetched as a
// tagged module version (go build . in a checkout without a tag, go run, go test).
const Devel = "(devel)"

// Info is what a binary knows of its build. Revision and Time are empty when the build
// recorded no VCS information (go run, go test, -buildvcs=false, a tree outside git).
type Info struct {
	Version   string // the main module's version, or Devel
	Revision  string // the VCS revision, with "-modified" when the tree had uncommitted changes
	Time      string // the revision's commit time, RFC 3339
	GoVersion string // the toolchain that built the binary, as runtime.Version says it
}

// Read returns the running binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return From(nil)
	}
	return From(bi)
}

// From returns the Info that bi records; a nil bi (a binary built without module
// support) gives Devel and an unknown Go version.
func From(bi *debug.BuildInfo) Info {
	info := Info{Version: Devel, GoVersion: "unknown"}
	if bi == nil {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if info.Revision != "" && modified {
		info.Revision += "-modified"
	}
	return info
}

// String is the one line -version prints after the program's name:
//
//	v1.2.0 (revision 0123abcd…, 2026-12-07T15:32:00Z) go1.26.8
//	(devel) go1.26.8
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	var vcs []string
	if i.Revision != "" {
		vcs = append(vcs, "revision "+i.Revision)
	}
	if i.Time != "" {
		vcs = append(vcs, i.Time)
	}
	if len(vcs) > 0 {
		b.WriteString(" (" + strings.Join(vcs, ", ") + ")")
	}
	b.WriteString(" " + i.GoVersion)
	return b.String()
}
