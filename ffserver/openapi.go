package ffserver

import (
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// The OpenAPI 3 document is built from the route table at start, with JSON schemas read
// from the request and response types by reflection, so it describes exactly the routes
// the server serves.

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, s.doc)
	return nil
}

// OpenAPI returns the API's OpenAPI 3 document.
func OpenAPI() map[string]any { return openAPIDoc(apiRoutes()) }

func openAPIDoc(rts []route) map[string]any {
	paths := map[string]any{}
	schemas := map[string]any{}
	for _, rt := range rts {
		op := map[string]any{"summary": rt.summary, "operationId": operationID(rt)}
		if rt.doc != "" {
			op["description"] = rt.doc
		}
		var params []any
		for _, seg := range strings.Split(rt.path, "/") {
			if strings.HasPrefix(seg, "{") {
				params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true,
					"schema": map[string]any{"type": "string"}})
			}
		}
		for _, p := range rt.params {
			param := map[string]any{"name": p.name, "in": p.in, "schema": map[string]any{"type": "string"}}
			if p.doc != "" {
				param["description"] = p.doc
			}
			params = append(params, param)
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.request != nil {
			t := reflect.TypeOf(rt.request)
			op["requestBody"] = map[string]any{"required": len(requiredFields(t)) > 0, "content": map[string]any{
				mediaJSON: map[string]any{"schema": schemaRef(t, schemas)}}}
		}
		op["responses"] = responses(rt, schemas)
		if rt.auth {
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		item, _ := paths[rt.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.path] = item
		}
		item[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "FlowFabric", "version": "1"},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
	}
}

// errorDescriptions say what each error status of the API means.
var errorDescriptions = map[int]string{ //nolint:gochecknoglobals // a constant table
	http.StatusBadRequest:            "invalid input: a malformed or unknown field, a bad id or query parameter, or a value the engine refuses",
	http.StatusUnauthorized:          "missing or wrong bearer token",
	http.StatusNotFound:              "no such execution or worker",
	http.StatusConflict:              "refused in the current state (a finished execution, a stale lease, a duplicate worker instance) or on a store conflict",
	http.StatusRequestEntityTooLarge: "the body is over the route's limit",
	http.StatusTooManyRequests:       "a limit was reached, such as the replay cap of the execution's policy",
	http.StatusInternalServerError:   "an internal error, logged by the server and answered without detail",
	http.StatusServiceUnavailable:    "the store does not answer, or the request timed out",
}

// responses documents every status rt answers with: the success body, the other answers,
// and the error body with what the status means.
func responses(rt route, schemas map[string]any) map[string]any {
	body := func(v any) map[string]any {
		return map[string]any{"application/json": map[string]any{"schema": schemaRef(reflect.TypeOf(v), schemas)}}
	}
	out := map[string]any{}
	for _, code := range rt.statuses() {
		resp := map[string]any{}
		switch i := slices.IndexFunc(rt.also, func(a answer) bool { return a.status == code }); {
		case code == rt.status:
			resp["description"] = "success"
			if content := successContent(rt, schemas); content != nil {
				resp["content"] = content
			}
		case i >= 0:
			resp["description"] = rt.also[i].why
			if rt.also[i].respond != nil {
				resp["content"] = body(rt.also[i].respond)
			}
		default:
			resp["description"] = errorDescriptions[code]
			resp["content"] = body(ErrorBody{})
			if code == http.StatusUnauthorized {
				resp["headers"] = map[string]any{"WWW-Authenticate": map[string]any{
					"description": "the scheme to answer with: " + authChallenge, "schema": map[string]any{"type": "string"}}}
			}
		}
		out[strconv.Itoa(code)] = resp
	}
	return out
}

// successContent documents rt's success body: JSON of its respond type, or each of its
// media types with the schema of its respond type or, without one, the media type's own.
func successContent(rt route, schemas map[string]any) map[string]any {
	media := rt.media
	if media == nil && rt.respond != nil {
		media = []string{mediaJSON}
	}
	if media == nil {
		return nil
	}
	out := map[string]any{}
	for _, mt := range media {
		schema := mediaSchema(mt)
		if rt.respond != nil {
			schema = schemaRef(reflect.TypeOf(rt.respond), schemas)
		}
		out[mt] = map[string]any{"schema": schema}
	}
	return out
}

// mediaSchema is the schema of a body of media type mt that no Go type describes.
func mediaSchema(mt string) map[string]any {
	switch mt {
	case mediaJSON:
		return map[string]any{"description": "any JSON value"}
	case mediaBinary:
		return map[string]any{"type": "string", "format": "binary"}
	default:
		return map[string]any{"type": "string"}
	}
}

func operationID(rt route) string {
	name := strings.ToLower(rt.method)
	for _, seg := range strings.Split(strings.TrimPrefix(rt.path, "/v1"), "/") {
		seg = strings.Trim(seg, "{}")
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '.' || r == '_' }) {
			name += strings.ToUpper(part[:1]) + part[1:]
		}
	}
	return name
}

var (
	timeType     = reflect.TypeOf(time.Time{})        //nolint:gochecknoglobals // constant
	durationType = reflect.TypeOf(fftype.Duration(0)) //nolint:gochecknoglobals // constant
	rawType      = reflect.TypeOf([]byte(nil))        //nolint:gochecknoglobals // constant
)

// schemaRef returns a JSON schema for t, registering named struct types in schemas.
func schemaRef(t reflect.Type, schemas map[string]any) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == durationType:
		return map[string]any{"type": "integer", "description": "milliseconds"}
	case t.Name() == "RawMessage":
		return map[string]any{"description": "any JSON value"}
	case t == rawType:
		return map[string]any{"type": "string", "format": "byte"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint64, reflect.Uint32:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaRef(t.Elem(), schemas)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaRef(t.Elem(), schemas)}
	case reflect.Struct:
		name := t.Name()
		if _, done := schemas[name]; !done {
			schemas[name] = map[string]any{} // placeholder against recursion
			props := map[string]any{}
			structProps(t, props, schemas)
			schema := map[string]any{"type": "object", "properties": props}
			if req := requiredFields(t); len(req) > 0 {
				schema["required"] = req
			}
			schemas[name] = schema
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	default:
		return map[string]any{}
	}
}

// structProps adds the schemas of t's fields to props, by the names the server decodes
// them by (jsonFields). A field's format tag sets its schema's format, as format:"byte"
// does for a string of base64.
func structProps(t reflect.Type, props map[string]any, schemas map[string]any) {
	for name, f := range jsonFields(t) {
		schema := schemaRef(f.Type, schemas)
		if format := f.Tag.Get("format"); format != "" {
			schema["format"] = format
		}
		props[name] = schema
	}
	if t == reflect.TypeOf(fftype.Execution{}) {
		props["state"] = map[string]any{"type": "string", "description": "the derived public state"}
	}
}
