package ffserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/flowfabric/flowfabric/fftype"
)

// statusOfKind is the one table from error kinds to HTTP statuses.
var statusOfKind = map[fftype.Kind]int{ //nolint:gochecknoglobals // a constant table
	fftype.KindNotFound:        http.StatusNotFound,
	fftype.KindValidation:      http.StatusBadRequest,
	fftype.KindConflict:        http.StatusConflict,
	fftype.KindState:           http.StatusConflict,
	fftype.KindContention:      http.StatusConflict,
	fftype.KindLimited:         http.StatusTooManyRequests,
	fftype.KindTooLarge:        http.StatusRequestEntityTooLarge,
	fftype.KindUnauthenticated: http.StatusUnauthorized,
	fftype.KindUnavailable:     http.StatusServiceUnavailable,
}

// ErrorBody is the JSON body of every error response, and an item's error in a bulk call.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Kind is one of fftype.Kinds, even for an internal error (see errorBody).
	Kind      string `json:"kind"`
	Retryable bool   `json:"retryable"`
}

// The codes of errors the server states of its own.
const (
	// codeTimeout is the code of a request that ran out of time.
	codeTimeout = "timeout"
	// codeInternal is the code of an internal error.
	codeInternal = "internal"
)

// apiError returns err as the API states it: an *fftype.Error as it is, the end of the
// request's context (its timeout, or its client gone) as a retryable unavailable error,
// and nil for anything else, an internal error.
func apiError(err error) *fftype.Error {
	var fe *fftype.Error
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, context.DeadlineExceeded):
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: codeTimeout, Message: "the request timed out", Retryable: true}
	case errors.Is(err, context.Canceled):
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: "cancelled", Message: "the request was cancelled", Retryable: true}
	default:
		return nil
	}
}

// authChallenge is the WWW-Authenticate header of every 401 (RFC 9110 §11.6.1): it names
// the scheme to answer with.
const authChallenge = `Bearer realm="flowfabric"`

// writeError answers with err: an *fftype.Error by its kind's status and its public
// message (a 401 with the challenge), a timeout or cancellation as 503; anything else is
// logged in full and answered with a generic 500 that reveals nothing (see errorBody).
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status := http.StatusInternalServerError
	if fe := apiError(err); fe == nil {
		log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		if s, ok := statusOfKind[fe.Kind]; ok {
			status = s
		}
		if fe.Err != nil {
			log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", fe.Code, "cause", fe.Err)
		}
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", authChallenge)
	}
	writeJSON(w, status, errorBody(err))
}

// errorBody is how the API states err, in an answer or in one item's result of a bulk
// call: an error the API knows by its public message (its code when it has none), and
// anything else as an internal error that reveals nothing: kind unavailable, as clients
// take a 500 without a kind they know, code internal, worth a retry. Whole or per item,
// an internal error reads the same.
func errorBody(err error) *ErrorBody {
	fe := apiError(err)
	if fe == nil {
		return &ErrorBody{Error: "internal error", Code: codeInternal, Kind: string(fftype.KindUnavailable), Retryable: true}
	}
	msg := fe.Message
	if msg == "" {
		msg = fe.Code
	}
	return &ErrorBody{Error: msg, Code: fe.Code, Kind: string(fe.Kind), Retryable: fe.Retryable}
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", mediaJSON)
	w.WriteHeader(status)
	_ = NewJSONEncoder(w).Encode(v)
}

// NewJSONEncoder returns an encoder for the API's bodies: JSON as it is, without the
// HTML escaping (<, > and & as \u003c…) that would make a payload up to six times
// larger than its owner sent it, and push it past the size limits.
func NewJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

func badRequest(format string, args ...any) error {
	return fftype.Validationf(fftype.CodeInvalidInput, format, args...)
}

// decode reads exactly one JSON value of type T, a struct type, from the body, refusing
// unknown fields (see checkObject), wrong types, trailing data, invalid UTF-8 (which the
// JSON decoder would silently replace), bodies over limit, and bodies without T's required
// fields (see requiredFields). An empty body decodes as the zero value when T has no
// required field.
func decode[T any](r *http.Request, limit int64) (T, error) {
	var v T
	t := reflect.TypeFor[T]()
	names := requiredFields(t)
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return v, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		return v, bodyError(err, limit)
	}
	if !utf8.Valid(body) {
		return v, badRequest("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	err = dec.Decode(&v)
	if errors.Is(err, io.EOF) && len(names) == 0 {
		return v, nil
	}
	if err != nil {
		return v, bodyError(err, limit)
	}
	if dec.More() {
		return v, badRequest("the body holds more than one JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return v, bodyError(err, limit)
		}
		return v, badRequest("the body holds trailing data after the JSON value")
	}
	var present map[string]json.RawMessage
	if err := json.Unmarshal(body, &present); err != nil {
		return v, badRequest("the body must be a JSON object")
	}
	if err := checkObject(t, present, ""); err != nil {
		return v, err
	}
	for _, name := range names {
		raw, ok := present[name]
		if !ok {
			return v, badRequest("%s is required", name)
		}
		if string(raw) == "null" { // decoded, it would be the zero value too
			return v, badRequest("%s is required; null is not a value for it", name)
		}
	}
	return v, nil
}

// checkContentType refuses a body whose media type is neither JSON nor the form type curl
// -d sends (its body is still read as JSON, so a shell worker needs no extra header). No
// Content-Type at all is taken as JSON. The media type is parsed, so its case and
// parameters do not matter (RFC 9110 §8.3.1) and application/jsonx is not JSON.
func checkContentType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == mediaJSON || mt == "application/x-www-form-urlencoded") {
		return nil
	}
	return &fftype.Error{Kind: fftype.KindValidation, Code: "unsupported_media_type",
		Message: "send the body as application/json"}
}

// requiredFields returns the JSON names of t's fields tagged required:"true": the fields a
// request must carry, and not as null. The OpenAPI document lists them as required, and
// marks a request body required when its type has any. decode refuses a body without them;
// a nested type's (such as a fence's) are refused by the engine. Every field the server
// refuses when missing is tagged, and every field whose zero value is legal must be, as
// once decoded a missing one could not be told from it.
func requiredFields(t reflect.Type) []string {
	if names, ok := requiredByType.Load(t); ok {
		return names.([]string)
	}
	var names []string
	if t.Kind() == reflect.Struct {
		for f := range t.Fields() {
			if f.Tag.Get("required") == "true" {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				names = append(names, name)
			}
		}
	}
	requiredByType.Store(t, names)
	return names
}

// requiredByType caches requiredFields by type.
var requiredByType sync.Map //nolint:gochecknoglobals // a cache of what reflection derives from types

// checkObject refuses a key of obj, a JSON object decoded into the struct type t, that is
// not exactly the JSON name of one of t's fields, and does the same in the values of its
// fields (see checkFieldNames). encoding/json matches names case-insensitively, even with
// DisallowUnknownFields, so {"lane":"l","Lane":"x"} would decode as lane "x" though "Lane"
// is no field of the API. at is obj's place in the body, for the error ("" for the body).
func checkObject(t reflect.Type, obj map[string]json.RawMessage, at string) error {
	fields := jsonFields(t)
	for _, k := range slices.Sorted(maps.Keys(obj)) { // sorted: the same body names the same field
		name := k
		if at != "" {
			name = at + "." + k
		}
		f, ok := fields[k]
		if !ok {
			return badRequest("unknown field %q", name)
		}
		if err := checkFieldNames(f.Type, obj[k], name); err != nil {
			return err
		}
	}
	return nil
}

// checkFieldNames applies checkObject to every object in raw that decodes into a struct;
// raw is a JSON value that decoded into a value of type t. A type that decodes itself
// (json.Unmarshaler) follows its own rules. raw already decoded into t, so it has the
// shape read here or is null, which reads as nothing: the errors of reading it are nil.
func checkFieldNames(t reflect.Type, raw json.RawMessage, at string) error {
	if !holdsStructs(t) {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		_ = json.Unmarshal(raw, &obj)
		return checkObject(t, obj, at)
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		_ = json.Unmarshal(raw, &items)
		for i, item := range items {
			if err := checkFieldNames(t.Elem(), item, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		var items map[string]json.RawMessage
		_ = json.Unmarshal(raw, &items)
		for _, k := range slices.Sorted(maps.Keys(items)) {
			if err := checkFieldNames(t.Elem(), items[k], at+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonUnmarshaler is the interface of types that decode themselves.
var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]() //nolint:gochecknoglobals // a constant type

// holdsStructs reports whether a value of type t may hold a JSON object that encoding/json
// decodes into a struct by its fields' names.
func holdsStructs(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return false
	}
	switch t.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array, reflect.Map:
		return holdsStructs(t.Elem())
	default:
		return false
	}
}

// jsonFields returns the fields of struct type t by their JSON names, as encoding/json
// decodes them: tagged names, or Go names for untagged fields; fields of embedded structs
// without a tagged name are promoted unless t has a field of that name.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	if fields, ok := fieldsByType.Load(t); ok {
		return fields.(map[string]reflect.StructField)
	}
	fields := map[string]reflect.StructField{}
	var embedded []reflect.Type
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case f.Anonymous && name == "" && ft.Kind() == reflect.Struct:
			embedded = append(embedded, ft)
		case !f.IsExported():
		case name == "":
			fields[f.Name] = f
		default:
			fields[name] = f
		}
	}
	for _, et := range embedded {
		for name, f := range jsonFields(et) {
			if _, ok := fields[name]; !ok {
				fields[name] = f
			}
		}
	}
	fieldsByType.Store(t, fields)
	return fields
}

// fieldsByType caches jsonFields by type.
var fieldsByType sync.Map //nolint:gochecknoglobals // a cache of what reflection derives from types

func bodyError(err error, limit int64) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return &fftype.Error{Kind: fftype.KindTooLarge, Code: fftype.CodePayloadTooLarge,
			Message: fmt.Sprintf("the body is larger than %d bytes", limit)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: codeTimeout,
			Message: "the request body did not arrive within the request timeout", Retryable: true}
	case errors.Is(err, io.EOF):
		return badRequest("the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the body is truncated JSON")
	case errors.As(err, &syntax):
		return badRequest("invalid JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		return badRequest("field %q: want %s, got %s", typ.Field, typ.Type, typ.Value)
	default:
		return badRequest("invalid JSON body: %v", err)
	}
}
