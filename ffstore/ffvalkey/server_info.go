package ffvalkey

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/flowfabric/flowfabric/fftype"
)

// Oldest servers the store accepts: Redis 7.0 brought functions and ZRANGE BYLEX with
// LIMIT in one command; Valkey's first release is 7.2.
var (
	minRedis  = serverVersion{7, 0, 0} //nolint:gochecknoglobals // constants
	minValkey = serverVersion{7, 2, 0} //nolint:gochecknoglobals // constants
)

// serverVersion is a major.minor.patch release number.
type serverVersion [3]int

func (v serverVersion) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

func (v serverVersion) less(w serverVersion) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}

func parseServerVersion(s string) (serverVersion, bool) {
	var v serverVersion
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	if len(parts) < 2 {
		return v, false
	}
	for i, p := range parts {
		// A suffix such as "-rc1" does not matter for the comparison.
		if j := strings.IndexFunc(p, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			p = p[:j]
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

// serverInfo is what the store needs to know of a server, from its INFO reply.
type serverInfo struct {
	Product    string // "redis" or "valkey"
	Version    serverVersion
	AOF        bool // appendonly is on
	Cluster    bool // cluster_enabled
	AOFKnown   bool // the reply had a persistence section
	Raw        map[string]string
	VersionRaw string
}

// parseInfo reads an INFO reply (any sections) into its fields.
func parseInfo(reply string) map[string]string {
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(reply))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields
}

// checkServer reads the INFO reply of one node (sections server, persistence and
// cluster) and refuses a server the store cannot run on: one older than Redis 7.0 or
// Valkey 7.2, or one whose version it cannot find. Valkey reports its own version in
// valkey_version (and, for compatibility, an old redis_version), so that one decides.
func checkServer(addr, reply string) (serverInfo, error) {
	f := parseInfo(reply)
	info := serverInfo{Product: "redis", Raw: f}
	raw, min := f["redis_version"], minRedis
	if v, ok := f["valkey_version"]; ok || f["server_name"] == "valkey" {
		info.Product, min = "valkey", minValkey
		if ok {
			raw = v
		}
	}
	info.VersionRaw = raw
	v, ok := parseServerVersion(raw)
	if !ok {
		return info, fftype.NewError(fftype.KindUnavailable, CodeServerTooOld,
			"ffvalkey: server %s did not report its version in INFO (got %q); FlowFabric needs Redis %s+ or Valkey %s+", addr, raw, minRedis, minValkey)
	}
	info.Version = v
	if v.less(min) {
		e := fftype.NewError(fftype.KindUnavailable, CodeServerTooOld,
			"ffvalkey: server %s runs %s %s; FlowFabric needs Redis %s+ or Valkey %s+ (functions and ZRANGE BYLEX)", addr, info.Product, raw, minRedis, minValkey)
		e.Retryable = false
		return info, e
	}
	if aof, ok := f["aof_enabled"]; ok {
		info.AOFKnown = true
		info.AOF = aof == "1"
	}
	info.Cluster = f["cluster_enabled"] == "1"
	return info, nil
}
