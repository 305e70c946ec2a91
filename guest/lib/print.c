/* Serial output on COM1 (and its input, a line at a time) and a small printf for the test-guest
 * kit. */
#include "guest.h"
#include "kit.h"

static struct guest_lock print_lock;

/*
 * No LSR polling: wisp-vmm's and QEMU's 8250 accept every THR write at once, and every port
 * access is a VM exit (~10 us here), so polling would double the cost of each character.
 */
static void serial_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            outb(GUEST_PORT_COM1, '\r');
        outb(GUEST_PORT_COM1, (uint8_t)s[i]);
    }
}

void guest_print_lock_break(void)
{
    guest_unlock(&print_lock);
}

void guest_putc(char c)
{
    guest_lock(&print_lock);
    serial_write(&c, 1);
    guest_unlock(&print_lock);
}

bool guest_com1_line(char *line, unsigned size, unsigned *len)
{
    while (inb(GUEST_PORT_COM1 + 5) & 0x01) { /* LSR: data ready */
        char c = (char)inb(GUEST_PORT_COM1);
        if (c == '\n' || c == '\r') {
            line[*len] = '\0';
            *len = 0;
            return true;
        }
        if (*len < size - 1)
            line[(*len)++] = c;
    }
    return false;
}

void guest_puts(const char *s)
{
    guest_lock(&print_lock);
    serial_write(s, strlen(s));
    guest_unlock(&print_lock);
}

struct out {
    char *buf;
    size_t size, len;
};

static void out_char(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_number(struct out *o, uint64_t v, unsigned base, bool upper, bool negative,
                       int width, char pad, bool left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int total = n + (negative ? 1 : 0);
    if (negative && pad == '0')
        out_char(o, '-');
    for (; !left && total < width; width--)
        out_char(o, pad);
    if (negative && pad != '0')
        out_char(o, '-');
    while (n)
        out_char(o, tmp[--n]);
    for (; left && total < width; width--)
        out_char(o, ' ');
}

static void out_string(struct out *o, const char *s, int width, bool left)
{
    int n = (int)strlen(s);
    for (; !left && n < width; width--)
        out_char(o, ' ');
    while (*s)
        out_char(o, *s++);
    for (; left && n < width; width--)
        out_char(o, ' ');
}

/* One conversion starting after '%'; returns the pointer past it. */
static const char *out_conversion(struct out *o, const char *f, va_list *ap)
{
    bool left = false;
    char pad = ' ';
    int width = 0, longs = 0;
    for (; *f == '-' || *f == '0'; f++) {
        if (*f == '-')
            left = true;
        else
            pad = '0';
    }
    for (; *f >= '0' && *f <= '9'; f++)
        width = width * 10 + (*f - '0');
    for (; *f == 'l' || *f == 'z'; f++)
        longs++;
    if (left)
        pad = ' ';
    switch (*f) {
    case 'd':
    case 'i': {
        int64_t v = longs ? va_arg(*ap, long) : va_arg(*ap, int);
        uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
        out_number(o, mag, 10, false, v < 0, width, pad, left);
        break;
    }
    case 'u':
    case 'x':
    case 'X': {
        uint64_t v = longs ? va_arg(*ap, unsigned long) : va_arg(*ap, unsigned);
        out_number(o, v, *f == 'u' ? 10 : 16, *f == 'X', false, width, pad, left);
        break;
    }
    case 'p':
        out_string(o, "0x", 0, false);
        out_number(o, (uintptr_t)va_arg(*ap, void *), 16, false, false, width, pad, left);
        break;
    case 's': {
        const char *s = va_arg(*ap, const char *);
        out_string(o, s ? s : "(null)", width, left);
        break;
    }
    case 'c':
        out_char(o, (char)va_arg(*ap, int));
        break;
    case '%':
        out_char(o, '%');
        break;
    default: /* unknown: print it as written */
        out_char(o, '%');
        if (*f)
            out_char(o, *f);
        break;
    }
    return *f ? f + 1 : f;
}

int guest_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {.buf = buf, .size = size, .len = 0};
    va_list copy;
    va_copy(copy, ap);
    while (*fmt) {
        if (*fmt != '%')
            out_char(&o, *fmt++);
        else
            fmt = out_conversion(&o, fmt + 1, &copy);
    }
    va_end(copy);
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int guest_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = guest_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int guest_vprintf(const char *fmt, va_list ap)
{
    char buf[512];
    int n = guest_vsnprintf(buf, sizeof(buf), fmt, ap);
    guest_lock(&print_lock);
    serial_write(buf, strlen(buf));
    guest_unlock(&print_lock);
    return n;
}

int guest_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = guest_vprintf(fmt, ap);
    va_end(ap);
    return n;
}
