/*
 * libsrtp interoperability harness for tests/srtp_libsrtp.rs.
 *
 * Reads one command per line on stdin and answers each with one line on stdout:
 *
 *   caps                                  -> "ok <suite> <suite> ..." (the suites whose
 *                                            policy libsrtp accepts at run time)
 *   new <name> <suite> <in|out> <hex> [auth-only]
 *                                         -> "ok" | "err <status>"
 *        <hex> is the master key followed by the master salt; "auth-only" sets
 *        sec_serv_auth for RTP and RTCP (no encryption, RFC 3711 §9.4/§9.3).
 *   rtp <name> <protect|unprotect> <hex>  -> "ok <hex>" | "err <status>"
 *   rtcp <name> <protect|unprotect> <hex> -> "ok <hex>" | "err <status>"
 *   quit                                  -> exits 0
 *
 * <suite> is the SDES name (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32,
 * AES_256_CM_HMAC_SHA1_80, AEAD_AES_128_GCM, AEAD_AES_256_GCM). For the _32 suite
 * SRTCP keeps an 80-bit tag, as RFC 4568 §6.2.2 says and libsrtp recommends.
 * Sessions use libsrtp's defaults otherwise (replay window 128, ssrc_any_*).
 */
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SESSIONS 16
#define MAX_PACKET 65536
#define MAX_LINE (4 * MAX_PACKET)

struct named_session {
    char name[32];
    srtp_t session;
};

static struct named_session sessions[MAX_SESSIONS];
static int session_count;
static char line[MAX_LINE];
static unsigned char packet[MAX_PACKET + SRTP_MAX_TRAILER_LEN + 64];

static int set_policy(const char *suite, srtp_policy_t *policy)
{
    if (strcmp(suite, "AES_CM_128_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtcp);
    } else if (strcmp(suite, "AES_CM_128_HMAC_SHA1_32") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtcp);
    } else if (strcmp(suite, "AES_256_CM_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&policy->rtcp);
    } else if (strcmp(suite, "AEAD_AES_128_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtcp);
    } else if (strcmp(suite, "AEAD_AES_256_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy->rtcp);
    } else {
        return -1;
    }
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes hex into out (at most cap bytes); returns the length or -1. */
static int unhex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = strlen(hex);
    if (n % 2 != 0 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return (int)(n / 2);
}

static void print_hex(const unsigned char *bytes, int len)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < len; i++) {
        putchar(digits[bytes[i] >> 4]);
        putchar(digits[bytes[i] & 15]);
    }
}

static srtp_t find(const char *name)
{
    for (int i = 0; i < session_count; i++)
        if (strcmp(sessions[i].name, name) == 0)
            return sessions[i].session;
    return NULL;
}

static srtp_err_status_t create(const char *suite, const char *direction,
                                unsigned char *key, int auth_only, srtp_t *out)
{
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    if (set_policy(suite, &policy) != 0)
        return srtp_err_status_bad_param;
    if (auth_only) {
        policy.rtp.sec_serv = sec_serv_auth;
        policy.rtcp.sec_serv = sec_serv_auth;
    }
    policy.ssrc.type =
        strcmp(direction, "out") == 0 ? ssrc_any_outbound : ssrc_any_inbound;
    policy.ssrc.value = 0;
    policy.key = key;
    policy.window_size = 128;
    policy.allow_repeat_tx = 0;
    policy.next = NULL;
    return srtp_create(out, &policy);
}

static void caps(void)
{
    static const char *all[] = {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
                                "AES_256_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM",
                                "AEAD_AES_256_GCM"};
    unsigned char key[64] = {0};
    printf("ok");
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        srtp_t s = NULL;
        if (create(all[i], "out", key, 0, &s) == srtp_err_status_ok) {
            printf(" %s", all[i]);
            srtp_dealloc(s);
        }
    }
    printf("\n");
}

int main(void)
{
    if (srtp_init() != srtp_err_status_ok) {
        fprintf(stderr, "srtp_init failed\n");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        char *cmd = strtok(line, " ");
        if (cmd == NULL)
            continue;
        if (strcmp(cmd, "quit") == 0)
            break;
        if (strcmp(cmd, "caps") == 0) {
            caps();
            continue;
        }
        if (strcmp(cmd, "new") == 0) {
            char *name = strtok(NULL, " "), *suite = strtok(NULL, " ");
            char *direction = strtok(NULL, " "), *hex = strtok(NULL, " ");
            char *option = strtok(NULL, " ");
            static unsigned char key[64];
            srtp_t s = NULL;
            if (name == NULL || suite == NULL || direction == NULL || hex == NULL ||
                strlen(name) >= sizeof(sessions[0].name) || session_count == MAX_SESSIONS ||
                unhex(hex, key, sizeof(key)) < 0) {
                printf("err usage\n");
                continue;
            }
            int auth_only = option != NULL && strcmp(option, "auth-only") == 0;
            srtp_err_status_t status = create(suite, direction, key, auth_only, &s);
            if (status != srtp_err_status_ok) {
                printf("err %d\n", (int)status);
                continue;
            }
            strcpy(sessions[session_count].name, name);
            sessions[session_count].session = s;
            session_count++;
            printf("ok\n");
            continue;
        }
        if (strcmp(cmd, "rtp") == 0 || strcmp(cmd, "rtcp") == 0) {
            int rtcp = strcmp(cmd, "rtcp") == 0;
            char *name = strtok(NULL, " "), *op = strtok(NULL, " "), *hex = strtok(NULL, " ");
            srtp_t s = name ? find(name) : NULL;
            int len = hex ? unhex(hex, packet, MAX_PACKET) : -1;
            if (s == NULL || op == NULL || len < 0) {
                printf("err usage\n");
                continue;
            }
            srtp_err_status_t status;
            if (strcmp(op, "protect") == 0)
                status = rtcp ? srtp_protect_rtcp(s, packet, &len) : srtp_protect(s, packet, &len);
            else
                status = rtcp ? srtp_unprotect_rtcp(s, packet, &len) : srtp_unprotect(s, packet, &len);
            if (status != srtp_err_status_ok) {
                printf("err %d\n", (int)status);
                continue;
            }
            printf("ok ");
            print_hex(packet, len);
            printf("\n");
            continue;
        }
        printf("err unknown command\n");
    }
    for (int i = 0; i < session_count; i++)
        srtp_dealloc(sessions[i].session);
    srtp_shutdown();
    return 0;
}
