// Command argocdhealth runs an Argo CD Lua health script on Kubernetes objects read from
// stdin as JSON (one object, or a List), the way Argo CD's controller does: gopher-lua,
// only the base, table and package libraries, the object as the global `obj`, one second
// per run, and a returned table whose `status` must be one of Argo CD's health codes
// (anything else reads as Unknown). It prints a JSON list of {name, status, message}.
//
//	argocdhealth manifests/argocd/namespace-health.lua < object.json
//
// The e2e tests use it to show what Argo CD displays for each state of the operator.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: %s SCRIPT.lua < objects.json", os.Args[0]))
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		fail(err)
	}
	items := []map[string]any{doc}
	if list, ok := doc["items"].([]any); ok {
		items = items[:0]
		for _, it := range list {
			m, ok := it.(map[string]any)
			if !ok {
				fail(fmt.Errorf("a List item is not an object"))
			}
			items = append(items, m)
		}
	}
	out := []map[string]string{}
	for _, obj := range items {
		status, message, err := health(string(script), obj)
		if err != nil {
			fail(err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		ns, _ := meta["namespace"].(string)
		name, _ := meta["name"].(string)
		out = append(out, map[string]string{
			"name": ns + "/" + name, "status": status, "message": message,
		})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

// health evaluates script against obj as Argo CD evaluates a custom health check.
func health(script string, obj map[string]any) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(open), NRet: 0, Protect: true},
			lua.LString(name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	status := lua.LVAsString(result.RawGetString("status"))
	message := lua.LVAsString(result.RawGetString("message"))
	if !healthCodes[status] {
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return status, message, nil
}

// toLua converts decoded JSON to Lua values: objects to tables keyed by string, arrays to
// 1-based sequences, numbers to LNumber.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "argocdhealth:", err)
	os.Exit(1)
}
