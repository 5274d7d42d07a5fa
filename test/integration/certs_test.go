package integration

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/util/cert"
)

var _ = Describe("serving certificate", func() {
	It("is reloaded from --cert-dir without a restart", func() {
		dir := testEnv.WebhookInstallOptions.LocalServingCertDir
		crtPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		origCrt, err := os.ReadFile(crtPath)
		Expect(err).NotTo(HaveOccurred())
		origKey, err := os.ReadFile(keyPath)
		Expect(err).NotTo(HaveOccurred())
		origSerial := firstSerial(origCrt)
		Expect(servedSerial()).To(Equal(origSerial))

		// The API server trusts only the envtest CA, so put the original
		// pair back however this spec ends.
		DeferCleanup(func() {
			Expect(os.WriteFile(keyPath, origKey, 0o600)).To(Succeed())
			Expect(os.WriteFile(crtPath, origCrt, 0o600)).To(Succeed())
			Eventually(servedSerial).WithTimeout(20*time.Second).Should(Equal(origSerial), "original certificate served again")
		})

		newCrt, newKey, err := cert.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(keyPath, newKey, 0o600)).To(Succeed())
		Expect(os.WriteFile(crtPath, newCrt, 0o600)).To(Succeed())
		Eventually(servedSerial).WithTimeout(20*time.Second).Should(Equal(firstSerial(newCrt)), "new certificate served")
	})
})

// servedSerial returns the serial number of the certificate the suite's
// webhook server presents now.
func servedSerial() (string, error) {
	wio := testEnv.WebhookInstallOptions
	return servedSerialAt(net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort)))
}

func firstSerial(pemData []byte) string {
	block, _ := pem.Decode(pemData)
	Expect(block).NotTo(BeNil())
	c, err := x509.ParseCertificate(block.Bytes)
	Expect(err).NotTo(HaveOccurred())
	return c.SerialNumber.String()
}
