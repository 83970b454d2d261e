package fftype

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Input limits.
const (
	MaxLaneBytes        = 64
	MaxNamespaceBytes   = 64
	MaxKindBytes        = 128
	MaxCapabilityTokens = 256
	MaxCapabilityBytes  = 4096 // of the sorted, comma-joined set
	MaxTags             = 64
	MaxTagKeyBytes      = 128
	MaxTagValueBytes    = 1024
	MaxIdemKeyBytes     = 256
	MaxReasonBytes      = 1024
	MaxCategoryBytes    = 64
	MaxWorkerIDBytes    = 256
	MaxPriority         = 9000
	DefaultNamespace    = "default"
)

// ValidateLane checks a lane name: 1 to 64 bytes, each printable ASCII (0x20–0x7E), and
// not "." or "..", which a URL path cannot name.
func ValidateLane(lane string) error {
	if err := checkPrintable(lane, MaxLaneBytes, true); err != "" {
		return Validationf(CodeInvalidLane, "lane %q: %s", truncate(lane, 80), err)
	}
	if dotSegment(lane) {
		return Validationf(CodeInvalidLane, "lane %q: a URL path cannot name it", lane)
	}
	return nil
}

// dotSegment reports whether s is "." or "..": a name that cannot be a segment of a URL
// path (a lane in /v1/lanes/{lane}, a worker id in /v1/workers/{worker_instance_id}), as
// clients and servers resolve such segments away, escaped or not.
func dotSegment(s string) bool { return s == "." || s == ".." }

// ValidateNamespace checks a namespace: 1 to 64 bytes of printable ASCII without spaces.
func ValidateNamespace(ns string) error {
	if err := checkPrintable(ns, MaxNamespaceBytes, false); err != "" {
		return Validationf(CodeInvalidNamespace, "namespace %q: %s", truncate(ns, 80), err)
	}
	return nil
}

// ValidateKind checks an execution kind: 1 to 128 bytes of printable ASCII without spaces.
func ValidateKind(kind string) error {
	if err := checkPrintable(kind, MaxKindBytes, false); err != "" {
		return Validationf(CodeInvalidKind, "kind %q: %s", truncate(kind, 80), err)
	}
	return nil
}

func checkPrintable(s string, max int, spaceOK bool) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > max {
		return "longer than " + itoa(max) + " bytes"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || (c == ' ' && !spaceOK) {
			return "contains a byte outside printable ASCII"
		}
	}
	return ""
}

// ValidateWorkerID checks a worker or worker-instance id: 1 to 256 bytes of UTF-8 with no
// control character, and not "." or "..", which a URL path cannot name. Ids become parts
// of store keys, which some stores hold as text.
func ValidateWorkerID(field, id string) error {
	if id == "" {
		return Validationf(CodeInvalidInput, "%s must be 1 to %d bytes", field, MaxWorkerIDBytes)
	}
	if dotSegment(id) {
		return Validationf(CodeInvalidInput, "%s %q: a URL path cannot name it", field, id)
	}
	return ValidatePlainText(field, id, MaxWorkerIDBytes)
}

// ValidatePlainText checks text that is stored and shown as it is (ids, idempotency keys):
// text (ValidateText) with no control character.
func ValidatePlainText(field, s string, max int) error {
	if err := ValidateText(field, s, max); err != nil {
		return err
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return Validationf(CodeInvalidInput, "%s contains a control character", field)
		}
	}
	return nil
}

// NormalizeCapabilities validates a capability set and returns it sorted and without
// duplicates. Each token is non-empty, has no comma, whitespace or control byte; there are
// at most 256 tokens and their comma-joined form is at most 4,096 bytes. field names the
// input in the error ("capabilities", "required_capabilities").
func NormalizeCapabilities(field string, caps []string) ([]string, error) {
	if len(caps) == 0 {
		return nil, nil
	}
	if len(caps) > MaxCapabilityTokens {
		return nil, Validationf(CodeInvalidCapabilities, "%s: more than %d tokens", field, MaxCapabilityTokens)
	}
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		if c == "" {
			return nil, Validationf(CodeInvalidCapabilities, "%s: empty token", field)
		}
		if !utf8.ValidString(c) {
			return nil, Validationf(CodeInvalidCapabilities, "%s: token %q is not valid UTF-8", field, truncate(c, 80))
		}
		for _, r := range c {
			if r == ',' {
				return nil, Validationf(CodeInvalidCapabilities, "%s: token %q contains a comma", field, truncate(c, 80))
			}
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return nil, Validationf(CodeInvalidCapabilities, "%s: token %q contains whitespace or a control character", field, truncate(c, 80))
			}
		}
		out = append(out, c)
	}
	sort.Strings(out)
	uniq := out[:1]
	for _, c := range out[1:] {
		if c != uniq[len(uniq)-1] {
			uniq = append(uniq, c)
		}
	}
	if n := len(strings.Join(uniq, ",")); n > MaxCapabilityBytes {
		return nil, Validationf(CodeInvalidCapabilities, "%s: %d bytes joined, more than %d", field, n, MaxCapabilityBytes)
	}
	return uniq, nil
}

// CoversCapabilities reports whether the sorted set have contains every token of the sorted
// set need.
func CoversCapabilities(have, need []string) bool {
	i := 0
	for _, n := range need {
		for i < len(have) && have[i] < n {
			i++
		}
		if i == len(have) || have[i] != n {
			return false
		}
		i++
	}
	return true
}

// ValidateTagKey checks a tag key: starts with a lowercase letter, then lowercase letters,
// digits, '_', '.' or '-', at most 128 bytes. For example "customer" or "billing.plan".
func ValidateTagKey(k string) error {
	ok := k != "" && len(k) <= MaxTagKeyBytes && k[0] >= 'a' && k[0] <= 'z'
	for i := 1; ok && i < len(k); i++ {
		c := k[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return Validationf(CodeInvalidTagKey, "tag key %q: want a lowercase letter then [a-z0-9_.-], at most %d bytes", truncate(k, 80), MaxTagKeyBytes)
	}
	return nil
}

// ValidateTags checks a tag map: at most 64 tags, valid keys, values of UTF-8 at most
// 1,024 bytes. A tag whose value is "" is no tag (creating or changing tags drops it), so
// it does not count towards the 64; with them, a map holds at most 128 entries, as
// SetTags takes.
func ValidateTags(tags map[string]string) error {
	if len(tags) > 2*MaxTags {
		return Validationf(CodeInvalidInput, "more than %d tag entries", 2*MaxTags)
	}
	kept := 0
	for _, v := range tags {
		if v != "" {
			kept++
		}
	}
	if kept > MaxTags {
		return Validationf(CodeInvalidInput, "more than %d tags", MaxTags)
	}
	for k, v := range tags {
		if err := ValidateTagKey(k); err != nil {
			return err
		}
		if why := checkText(v, MaxTagValueBytes); why != "" {
			return Validationf(CodeInvalidInput, "tag %q: value %s", k, why)
		}
	}
	return nil
}

// ValidateTraceparent checks a W3C traceparent header value ("00-<32 hex>-<16 hex>-<2 hex>").
// The empty string is valid and means "none".
func ValidateTraceparent(tp string) error {
	if tp == "" {
		return nil
	}
	ok := len(tp) == 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-'
	for i := 0; ok && i < len(tp); i++ {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		c := tp[i]
		ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
	}
	if !ok || tp[:2] == "ff" || tp[3:35] == strings.Repeat("0", 32) || tp[36:52] == strings.Repeat("0", 16) {
		return Validationf(CodeInvalidTraceparent, "traceparent %q is not a valid W3C traceparent", truncate(tp, 80))
	}
	return nil
}

// ValidateReason checks a free-text reason: text (ValidateText) of at most 1,024 bytes.
// ClipReason makes any text one.
func ValidateReason(field, s string) error { return ValidateText(field, s, MaxReasonBytes) }

// ValidateText checks free text the engine stores and hands out as it is (a reason, a
// failure category, a tag value): valid UTF-8 of at most max bytes.
func ValidateText(field, s string, max int) error {
	if why := checkText(s, max); why != "" {
		return Validationf(CodeInvalidInput, "%s %s", field, why)
	}
	return nil
}

// checkText returns why s is not text the engine stores and hands out as it is, or "": it
// must be valid UTF-8, as JSON, and so the HTTP API and the event log, could not carry it
// intact otherwise (nor could a store that keeps it as text take it), of at most max bytes.
func checkText(s string, max int) string {
	if len(s) > max {
		return "longer than " + itoa(max) + " bytes"
	}
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	return ""
}

// ClipReason returns s as a reason every transport delivers intact: invalid UTF-8 replaced
// by U+FFFD (as encoding/json would do on the way, growing s past the limit), then cut to at
// most MaxReasonBytes without splitting a character.
func ClipReason(s string) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	n := MaxReasonBytes
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // the cut falls inside a character: cut before it
	}
	return s[:n]
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
