/* Stand-ins for the GnuTLS functions Debian's static libmicrohttpd.a refers to.
 *
 * Debian builds libmicrohttpd with HTTPS support, so its archive calls into GnuTLS. wisp serves
 * plain HTTP on a unix socket only and never asks for TLS (no MHD_USE_TLS), and a static
 * wisp-vmm cannot link GnuTLS at all on Debian 12 (there is no static p11-kit or libunistring);
 * GnuTLS's library constructor would also add work to every launch. So libwisp_api links the
 * archive with these definitions instead: the library's own init and exit call
 * gnutls_global_init/deinit, which do nothing here; anything else would only be reached on a
 * TLS path, and stops the process with a message saying so. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The archive's references are resolved by name; the signatures below are not GnuTLS's,
 * because none but the first two can ever be called. */
#define NO_TLS(name)                                                                               \
    void name(void);                                                                               \
    void name(void)                                                                                \
    {                                                                                              \
        static const char msg[] = "wisp: " #name ": TLS is not built into this program\n";         \
        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);                                         \
        abort();                                                                                   \
    }

int gnutls_global_init(void);
int gnutls_global_init(void)
{
    return 0;
}

void gnutls_global_deinit(void);
void gnutls_global_deinit(void)
{
}

/* a variable in GnuTLS: its allocator */
void *(*gnutls_malloc)(size_t) = malloc;

NO_TLS(gnutls_alpn_set_protocols)
NO_TLS(gnutls_bye)
NO_TLS(gnutls_certificate_allocate_credentials)
NO_TLS(gnutls_certificate_free_credentials)
NO_TLS(gnutls_certificate_server_set_request)
NO_TLS(gnutls_certificate_set_dh_params)
NO_TLS(gnutls_certificate_set_retrieve_function2)
NO_TLS(gnutls_certificate_set_retrieve_function3)
NO_TLS(gnutls_certificate_set_x509_key_mem)
NO_TLS(gnutls_certificate_set_x509_key_mem2)
NO_TLS(gnutls_certificate_set_x509_trust_mem)
NO_TLS(gnutls_cipher_get)
NO_TLS(gnutls_credentials_set)
NO_TLS(gnutls_deinit)
NO_TLS(gnutls_dh_params_deinit)
NO_TLS(gnutls_dh_params_import_pkcs3)
NO_TLS(gnutls_dh_params_init)
NO_TLS(gnutls_handshake)
NO_TLS(gnutls_init)
NO_TLS(gnutls_priority_deinit)
NO_TLS(gnutls_priority_init)
NO_TLS(gnutls_priority_set)
NO_TLS(gnutls_protocol_get_version)
NO_TLS(gnutls_psk_allocate_server_credentials)
NO_TLS(gnutls_psk_free_server_credentials)
NO_TLS(gnutls_psk_set_server_credentials_function)
NO_TLS(gnutls_record_check_pending)
NO_TLS(gnutls_record_get_direction)
NO_TLS(gnutls_record_recv)
NO_TLS(gnutls_record_send)
NO_TLS(gnutls_session_get_ptr)
NO_TLS(gnutls_session_set_ptr)
NO_TLS(gnutls_strerror)
NO_TLS(gnutls_transport_set_int2)
