// vcsim for netfold's interop tests: VMware's own vCenter simulator (govmomi's simulator
// package, Debian's golang-github-vmware-govmomi-dev), started on a loopback port with a model
// sized by flags. Prints `url: http://user:pass@127.0.0.1:PORT/sdk` and serves until killed.
// With -tls it serves https with a self-signed certificate made at start (RSA 2048, as a
// standalone ESXi host has; the simulator's built-in test certificate is RSA 1024, which rustls
// refuses) and also prints `thumbprint: AB:CD:…`, the certificate's SHA-256 thumbprint as
// govmomi computes it.
//
// Build (offline, GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim ./tests/peers/vcsim
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (loopback)")
	hosts := flag.Int("host", 1, "standalone hosts per datacenter")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHosts := flag.Int("cluster-host", 3, "hosts per cluster")
	vms := flag.Int("vm", 2, "VMs per host")
	pgs := flag.Int("pg", 1, "distributed port groups per datacenter")
	username := flag.String("username", "", "the only user a login may name (default: any non-empty)")
	password := flag.String("password", "", "that user's password (with -username)")
	vlan := flag.Int("vm-network-vlan", 0, "VLAN id of every host's standard port group \"VM Network\" (vcsim serves 0)")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	flag.Parse()

	model := simulator.VPX()
	model.Host = *hosts
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Machine = *vms
	model.Portgroup = *pgs
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	// vcsim 0.24.2 serves every standard port group with VLAN 0, and its AddPortGroup does not
	// reach the host's config.network.portgroup; this sets the model before serving it.
	for _, e := range simulator.Map.All("HostSystem") {
		host := e.(*simulator.HostSystem)
		for i := range host.Config.Network.Portgroup {
			if pg := &host.Config.Network.Portgroup[i]; pg.Spec.Name == "VM Network" {
				pg.Spec.VlanId = int32(*vlan)
			}
		}
	}
	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		// vcsim then refuses any other user or password with InvalidLogin, as vCenter does.
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	if *useTLS {
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
	}
	server := model.Service.NewServer()
	if *useTLS {
		fmt.Printf("thumbprint: %s\n", server.CertificateInfo().ThumbprintSHA256)
	}
	fmt.Printf("url: %s\n", server.URL)
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
	model.Remove()
}

// selfSigned makes an RSA 2048 certificate for 127.0.0.1, signed by its own key.
func selfSigned() tls.Certificate {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "vcsim.netfold.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
