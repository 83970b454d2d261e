package ffvalkey

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// connConfig is a parsed store URL.
type connConfig struct {
	client  rueidis.ClientOption
	cluster bool // the URL asked for a cluster
	opts    Options
}

// ParseURL checks a store URL and returns the options it sets, so that a caller can add
// a Logger and pass both to [Open]. The syntax is
//
//	redis://[[user]:password@]host[:port][/database][?param=value&...]
//	rediss://...                        the same over TLS
//	redis+cluster://host[:port][,host[:port]...][?...]   a Cluster, from seed nodes
//	rediss+cluster://...                a Cluster over TLS
//	valkey://, valkeys://, valkey+cluster://, valkeys+cluster://   aliases of the above
//
// The port defaults to 6379 and the database to 0 (a Cluster has only database 0). More
// seed nodes may be given as addr=host:port parameters. Parameters: shards and prefix
// set the [Options] fields of the same names; dial_timeout (a Go duration) bounds
// connecting; ca_file names a PEM file of CA certificates to trust for TLS instead of the
// system's (a private CA), and skip_verify=true skips TLS certificate checks (tests
// only), both for TLS schemes only; client_name names the connections (CLIENT SETNAME).
// Over TLS, each server's certificate is checked against the address it is dialled at:
// on a Cluster, the endpoint the Cluster gives for each node, not the seed's.
// Unknown parameters, a query that does not parse, a '#' (a fragment, even an empty one),
// an '@' after the host (a password's unescaped '/', '?' or '#' cuts the URL before its
// '@'; write an '@' in a parameter as %40) and a bad percent-escape in the user name or
// password are refused with a validation error that quotes nothing of the user name or
// password. A ca_file that is missing, unreadable or holds no PEM certificate is refused
// with a validation error wrapping a [*CAFileError].
func ParseURL(rawURL string) (*Options, error) {
	c, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return &c.opts, nil
}

func parseURL(rawURL string) (*connConfig, error) {
	bad := func(format string, args ...any) (*connConfig, error) {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: store URL: "+format, args...)
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return bad("the URL has no scheme; want redis://host:port")
	}
	c := &connConfig{}
	var rootCAs *x509.CertPool // from ca_file; nil: the system's
	tlsOn := false
	switch strings.ToLower(scheme) {
	case "redis", "valkey":
	case "rediss", "valkeys":
		tlsOn = true
	case "redis+cluster", "valkey+cluster":
		c.cluster = true
	case "rediss+cluster", "valkeys+cluster":
		c.cluster, tlsOn = true, true
	default:
		return bad("scheme %q: want redis, rediss, redis+cluster, rediss+cluster or their valkey aliases", scheme)
	}
	// The authority may list several hosts, which net/url does not accept: split it off.
	authority, pathQuery := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, pathQuery = rest[:i], rest[i:]
	}
	if strings.Contains(pathQuery, "@") {
		// Not quoted: this '@' most likely ends a password cut short by an unescaped '/',
		// '?' or '#', whose rest would be read as the database or a parameter.
		return bad("an '@' follows the host; %s (and an '@' in a parameter as %%40)", ffstore.EscapeUserinfoHint)
	}
	var userinfo string
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, authority = authority[:i], authority[i+1:]
	}
	u, err := url.Parse("x://placeholder" + pathQuery)
	if err != nil {
		return bad("%v", err)
	}
	if userinfo != "" {
		// Not url.PathUnescape's error: it quotes the bad escape, a piece of the secret.
		name, pass, hasPass := strings.Cut(userinfo, ":")
		if c.client.Username, err = url.PathUnescape(name); err != nil {
			return bad("the user name holds a bad percent-escape; %s", ffstore.EscapeUserinfoHint)
		}
		if hasPass {
			if c.client.Password, err = url.PathUnescape(pass); err != nil {
				return bad("the password holds a bad percent-escape; %s", ffstore.EscapeUserinfoHint)
			}
		}
	}
	var hosts []string
	if authority != "" {
		hosts = strings.Split(authority, ",")
	}
	q, err := ffstore.URLQuery(pathQuery)
	if err != nil {
		return bad("%v", err)
	}
	hosts = append(hosts, q["addr"]...)
	if len(hosts) == 0 {
		hosts = []string{"localhost"}
	}
	for i, h := range hosts {
		addr, err := normalizeAddr(h)
		if err != nil {
			// The host is not quoted: a password with an unescaped '/', '?' or '#' cuts
			// the URL before its '@', and its user:password is read as a host.
			return bad("host %d of %d: %s; %s", i+1, len(hosts), err, ffstore.EscapeUserinfoHint)
		}
		c.client.InitAddress = append(c.client.InitAddress, addr)
	}
	if len(c.client.InitAddress) > 1 && !c.cluster {
		return bad("several hosts are only for a cluster: use redis+cluster://")
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		db, err := strconv.Atoi(p)
		if err != nil || db < 0 {
			return bad("database %q is not a number", p)
		}
		if c.cluster && db != 0 {
			return bad("a Cluster has only database 0, not %d", db)
		}
		c.client.SelectDB = db
	}
	for name, values := range q {
		if name == "addr" {
			continue
		}
		if len(values) != 1 {
			return bad("parameter %s is given %d times", name, len(values))
		}
		v := values[0]
		switch name {
		case "shards":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > fftype.MaxShards {
				return bad("shards=%q: want 1 to %d", v, fftype.MaxShards)
			}
			c.opts.Shards = n
		case "prefix":
			if err := checkPrefix(v); err != nil {
				return nil, err
			}
			c.opts.KeyPrefix = v
		case "dial_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return bad("dial_timeout=%q is not a duration", v)
			}
			c.client.Dialer.Timeout = d
		case "skip_verify":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("skip_verify=%q is not a boolean", v)
			}
			if !tlsOn {
				return bad("skip_verify is for rediss:// URLs")
			}
			c.opts.skipVerify = b
		case "ca_file":
			if !tlsOn {
				return bad("ca_file is for rediss:// URLs")
			}
			if rootCAs, err = loadCAFile(v); err != nil {
				return nil, err
			}
		case "client_name":
			c.client.ClientName = v
		default:
			return bad("unknown parameter %q", name)
		}
	}
	if tlsOn {
		// No ServerName: rueidis dials every node of a Cluster (which a rediss:// URL
		// may reach too) with this one config, and Go's TLS dial checks each node's
		// certificate against the address it dials when ServerName is empty.
		c.client.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: rootCAs,
			InsecureSkipVerify: c.opts.skipVerify} //nolint:gosec // only when the URL asks for it
	}
	return c, nil
}

// loadCAFile reads the CA certificates of a ca_file parameter.
func loadCAFile(path string) (*x509.CertPool, error) {
	fail := func(reason, cause error) (*x509.CertPool, error) {
		e := &CAFileError{Path: path, Reason: reason, Err: cause}
		return nil, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput, Message: "ffvalkey: store URL: " + e.Error(), Err: e}
	}
	if path == "" {
		return fail(ErrCAFileMissing, nil)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(ErrCAFileMissing, err)
	case err != nil:
		return fail(ErrCAFileUnreadable, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return fail(ErrCAFileNotPEM, nil)
	}
	return pool, nil
}

// normalizeAddr returns host:port, adding the default port.
func normalizeAddr(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", errors.New("empty host")
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "", errors.New("bad port")
		}
		if host == "" {
			host = "localhost"
		}
		return net.JoinHostPort(host, port), nil
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), "6379"), nil
}

// redact hides a password in a URL for messages: everything between the scheme and the
// URL's last '@', which covers a password holding unescaped reserved characters too.
func redact(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return "(a URL without a scheme)"
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = "xxxxx" + rest[at:]
	}
	return scheme + "://" + rest
}

// checkPrefix refuses key prefixes that would break the key layout.
func checkPrefix(p string) error {
	if p == "" || len(p) > 64 {
		return fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: key prefix %q: want 1 to 64 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == '{' || c == '}' || c == 0x7f {
			return fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: key prefix %q: no braces, spaces or control bytes", p)
		}
	}
	return nil
}
