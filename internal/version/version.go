// Package version reports the build's version, set at link time:
//
//	-ldflags "-X github.com/endpoint-policy/endpoint-policy/internal/version.version=v0.1.0
//	          -X github.com/endpoint-policy/endpoint-policy/internal/version.commit=<sha>"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var (
	version = "" // set at link time; else the module version, else "dev"
	commit  = "" // set at link time; else the VCS revision when Go recorded one
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the running binary's version information.
func Get() Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	return info
}

func (i Info) String() string {
	s := "endpoint-policy " + i.Version
	if i.Commit != "" {
		s += " (" + i.Commit + ")"
	}
	return fmt.Sprintf("%s %s %s", s, i.GoVersion, i.Platform)
}
