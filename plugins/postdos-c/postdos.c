/*
 * POSTDOS.COM: VPOSTD's DOS side as a real DOS program, the way the
 * POSTDOS sample of Microsoft KB Q72899 works.
 *
 *   1. INT 2Fh AX=1683h: the ID of the VM it runs in (BX).
 *   2. INT 2Fh AX=1684h BX=4321h: VPOSTD's V86 API entry point (ES:DI);
 *      0:0 when VPOSTD is not installed.
 *   3. For each message, a far call to that entry with BX = wParam (the VM
 *      ID) and DX:AX = lParam (the message's sequence number, 1, 2, ...).
 *      VPOSTD answers with CF set when it refuses a message (AX: 1 no
 *      window registered, 2 too many messages waiting); each refusal is
 *      printed and the program goes on with the next message.
 *
 * Between messages it waits `interval` milliseconds (INT 15h AH=86h), or
 * with interval=0 releases its time slice (INT 2Fh AX=1680h).
 *
 * Command line (all optional): count=N (default 5), interval=MS (default
 * 250). Exit code 0 when every message was accepted, 1 when VPOSTD is not
 * installed, 2 for a bad command line, 3 when some posts were refused.
 *
 * Build: bcc -Md -o POSTDOS.COM postdos.c   (Debian: bcc, bin86, elks-libc)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VPOSTD_DEVICE_ID 0x4321

/* Registers in and out of the assembly helpers (tiny model: DS = SS = CS). */
unsigned r_ax, r_bx, r_cx, r_dx, r_di, r_es, r_cf;
/* VPOSTD's entry point: offset, then segment (a far pointer in memory). */
unsigned entry[2];

/* INT 2Fh with AX = r_ax, BX = r_bx, ES:DI = 0:0. */
int2f()
{
#asm
    push si
    push di
    push es
    mov ax,[_r_ax]
    mov bx,[_r_bx]
    xor di,di
    mov es,di
    int 0x2F
    mov [_r_ax],ax
    mov [_r_bx],bx
    mov [_r_di],di
    mov ax,es
    mov [_r_es],ax
    pop es
    pop di
    pop si
#endasm
}

/* Far call to VPOSTD's entry with BX = r_bx, DX:AX = r_dx:r_ax; r_cf = CF. */
call_vpostd()
{
#asm
    push si
    push di
    mov bx,[_r_bx]
    mov dx,[_r_dx]
    mov ax,[_r_ax]
    callf [_entry]
    mov [_r_ax],ax
    sbb ax,ax
    mov [_r_cf],ax
    pop di
    pop si
#endasm
}

/* INT 15h AH=86h: wait CX:DX microseconds. */
wait_us()
{
#asm
    mov cx,[_r_cx]
    mov dx,[_r_dx]
    mov ah,#0x86
    int 0x15
#endasm
}

/* A whole number of milliseconds or messages; -1 if the word is not one. */
long number(s)
char *s;
{
    long n = 0;
    if (*s == 0)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > 100000000L)
            return -1;
        n = n * 10 + (*s - '0');
    }
    return n;
}

int main(argc, argv)
int argc;
char **argv;
{
    long count = 5, interval = 250, seq, us, v;
    unsigned vm_id, refused = 0;
    int i;
    char *why;

    for (i = 1; i < argc; i++) {
        if (strncmp(argv[i], "count=", 6) == 0 && (v = number(argv[i] + 6)) >= 0)
            count = v;
        else if (strncmp(argv[i], "interval=", 9) == 0 && (v = number(argv[i] + 9)) >= 0)
            interval = v;
        else {
            printf("unknown argument `%s' (expected count=N, interval=MS)\n", argv[i]);
            return 2;
        }
    }

    r_ax = 0x1683;
    r_bx = 0;
    int2f();
    vm_id = r_bx;

    r_ax = 0x1684;
    r_bx = VPOSTD_DEVICE_ID;
    int2f();
    entry[0] = r_di;
    entry[1] = r_es;
    if (entry[0] == 0 && entry[1] == 0) {
        printf("VPOSTD.386 is not installed\n");
        return 1;
    }
    printf("VM %u posting %ld messages every %ld ms\n", vm_id, count, interval);
    fflush(stdout);

    for (seq = 1; seq <= count; seq++) {
        r_bx = vm_id;
        r_dx = (unsigned)(seq >> 16);
        r_ax = (unsigned)seq;
        call_vpostd();
        if (r_cf) {
            refused++;
            if (r_ax == 1)
                why = "no Windows application has registered with VPOSTD";
            else if (r_ax == 2)
                why = "too many messages are waiting in VPOSTD";
            else
                why = "VPOSTD refused it";
            printf("message %ld refused (CF set): %s (AX=%u)\n", seq, why, r_ax);
            fflush(stdout);
        }
        if (seq == count)
            break;
        if (interval == 0) {
            r_ax = 0x1680;
            r_bx = 0;
            int2f();
        } else {
            us = interval * 1000L;
            r_cx = (unsigned)(us >> 16);
            r_dx = (unsigned)us;
            wait_us();
        }
    }
    printf("VM %u posted %ld messages, %u refused\n", vm_id, count - refused, refused);
    return refused == 0 ? 0 : 3;
}
