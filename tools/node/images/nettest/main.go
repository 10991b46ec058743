// Command nettest is the test image of the local node's e2e tests (no registry image can
// be pulled here, and a busybox is not available): one static binary.
//
//	nettest serve [ADDR]   answer every HTTP request with "<hostname>\n" (default :8080)
//	nettest get URL        GET URL, print the status line and body; exit 1 unless 2xx
//	nettest apiserver      GET /version of the API server through the in-cluster config
//	                       (the kubernetes Service, the ServiceAccount token and CA)
//	nettest webhook CERT KEY
//	                       serve HTTPS on :8443: allow every AdmissionReview, with the
//	                       warning "nettest webhook saw <kind> <name>"
//	nettest sleep          sleep until SIGTERM
//
// Tests give it IP addresses only, never names: a name would fall through to a resolver.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fail("usage: nettest serve [ADDR] | get URL | apiserver | sleep")
	}
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		serve(addr)
	case "get":
		if len(os.Args) != 3 {
			fail("usage: nettest get URL")
		}
		get(&http.Client{Timeout: 10 * time.Second}, os.Args[2], "")
	case "apiserver":
		apiserver()
	case "webhook":
		if len(os.Args) != 4 {
			fail("usage: nettest webhook CERT KEY")
		}
		webhook(os.Args[2], os.Args[3])
	case "sleep":
		waitForSignal()
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "nettest:", msg)
	os.Exit(1)
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", host)
	})
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fail(err.Error())
		}
	}()
	waitForSignal()
}

func waitForSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}

func get(client *http.Client, url, token string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fail(err.Error())
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	fmt.Printf("%s\n%s", resp.Status, body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		os.Exit(1)
	}
}

func apiserver() {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		fail("KUBERNETES_SERVICE_HOST/PORT are not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		fail(err.Error())
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		fail(err.Error())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fail("no certificate in " + saDir + "/ca.crt")
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	get(client, "https://"+net.JoinHostPort(host, port)+"/version", string(token))
}

type admissionReview struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Request    *admissionReq  `json:"request,omitempty"`
	Response   *admissionResp `json:"response,omitempty"`
}

type admissionReq struct {
	UID  string `json:"uid"`
	Kind struct {
		Kind string `json:"kind"`
	} `json:"kind"`
	Name string `json:"name"`
}

type admissionResp struct {
	UID      string   `json:"uid"`
	Allowed  bool     `json:"allowed"`
	Warnings []string `json:"warnings,omitempty"`
}

func webhook(cert, key string) {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var review admissionReview
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		req := review.Request
		review.Request = nil
		review.Response = &admissionResp{
			UID:      req.UID,
			Allowed:  true,
			Warnings: []string{fmt.Sprintf("nettest webhook saw %s %s", req.Kind.Kind, req.Name)},
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	})
	go func() {
		if err := http.ListenAndServeTLS(":8443", cert, key, nil); err != nil {
			fail(err.Error())
		}
	}()
	waitForSignal()
}
