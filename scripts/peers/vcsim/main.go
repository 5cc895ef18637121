// A vcsim command for Phoenix's tests: Debian ships govmomi's simulator
// package but no vcsim binary.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "address to listen on")
	vms := flag.Int("vm", 2, "VMs per host and cluster")
	flag.Parse()

	model := simulator.VPX()
	model.Machine = *vms
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Scheme: "https", Host: *listen}
	server := model.Service.NewServer()

	der := server.Certificate().Raw
	sum := sha256.Sum256(der)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	fmt.Printf("URL=%s\nTHUMBPRINT=%s\n", server.URL.String(), strings.Join(hex, ":"))
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	server.Close()
	model.Remove()
}
