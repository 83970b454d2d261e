package bench

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Host describes the machine a benchmark ran on.
type Host struct {
	CPU   string  `json:"cpu"`
	Cores int     `json:"cores"`
	MemGB float64 `json:"mem_gb"`
}

// ThisHost returns the CPU model, logical core count and memory of this machine. On
// systems without /proc the CPU is GOARCH and the memory 0.
func ThisHost() Host {
	h := Host{CPU: runtime.GOARCH, Cores: runtime.NumCPU()}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		h.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		// "24573656 kB"
		if kb, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			h.MemGB = float64(int(kb/1024/1024*10+0.5)) / 10
		}
	}
	return h
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Version names the code that ran: the module version, or the VCS revision (with
// "+dirty" for uncommitted changes) when the binary was built from a checkout, or "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if rev != "" {
		return rev[:min(12, len(rev))] + dirty
	}
	return "devel"
}
