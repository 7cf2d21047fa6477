; VMINT.COM: the DOS side of the tests of interrupts inside VMs and
; call-backs (tests/e2e/vmint.rs). The command tail is a list of letters,
; each a test step run in order; every result is a line of output
; (INT 10h teletype, so that INT 21h carries only what a step means).
;
;   i  INT 21h AH=30h (the hook chain sees it): prints "int21 ax=XXXX"
;   c  CALL FAR to the vector of INT 4Bh, then INT 4Bh (a call-back there):
;      prints "far ax=XXXX bx=XXXX sp=XXXX" and "int ax=XXXX sp=XXXX"
;      (sp: how many bytes the stack is off after the call, 0 when
;      balanced)
;   r  installs an INT 13h handler that takes 2 s (INT 15h AH=86h), calls
;      it and prints "back from int13 at XXXX" (the return offset)
;   s  installs an INT 60h handler that prints "isr60", then waits 100 ms
;      and prints "woke"
;   v  installs the same INT 60h handler and executes INT 60h
;   f  a #GP (a word read at offset 0FFFFh) with no handler of its own:
;      prints "fault ax=XXXX" if something handled it
;   g  the same with an INT 0Dh handler of its own (sets AX=0AAAAh)
;
; Build: nasm -f bin -o VMINT.COM vmint.asm

        org 100h

start:
        mov si, 81h
.next:
        cld
        lodsb
        cmp al, 0Dh
        je .done
        cmp al, 'i'
        jne .c
        call t_int21
        jmp .next
.c:     cmp al, 'c'
        jne .r
        call t_callback
        jmp .next
.r:     cmp al, 'r'
        jne .s
        call t_return
        jmp .next
.s:     cmp al, 's'
        jne .v
        call t_sleep
        jmp .next
.v:     cmp al, 'v'
        jne .f
        call t_int60
        jmp .next
.f:     cmp al, 'f'
        jne .g
        call t_fault
        jmp .next
.g:     cmp al, 'g'
        jne .next
        call t_own_fault
        jmp .next
.done:
        mov ax, 4C00h
        int 21h

; ---- steps -------------------------------------------------------------

t_int21:
        push si
        mov ax, 3000h
        int 21h
        push ax
        mov bx, s_int21
        call puts
        pop ax
        call hex16
        call nl
        pop si
        ret

t_callback:
        push si
        push es
        mov ax, 354Bh
        int 21h
        mov [cb], bx
        mov [cb+2], es
        pop es
        mov [sp0], sp
        mov ax, 1111h
        mov bx, 2222h
        call far [cb]
        mov [r_ax], ax
        mov [r_bx], bx
        mov ax, [sp0]
        sub ax, sp
        mov [r_sp], ax
        mov sp, [sp0]
        mov bx, s_far
        call puts
        mov ax, [r_ax]
        call hex16
        mov bx, s_bx
        call puts
        mov ax, [r_bx]
        call hex16
        mov bx, s_sp
        call puts
        mov ax, [r_sp]
        call hex16
        call nl

        mov [sp0], sp
        mov ax, 3333h
        int 4Bh
        mov [r_ax], ax
        mov ax, [sp0]
        sub ax, sp
        mov [r_sp], ax
        mov sp, [sp0]
        mov bx, s_int
        call puts
        mov ax, [r_ax]
        call hex16
        mov bx, s_sp
        call puts
        mov ax, [r_sp]
        call hex16
        call nl
        pop si
        ret

t_return:
        push si
        mov ax, 2513h
        mov dx, int13
        int 21h
        mov ah, 0
        int 13h
.after:
        call .here
.here:
        pop ax
        sub ax, .here - .after
        push ax
        mov bx, s_back
        call puts
        pop ax
        call hex16
        call nl
        pop si
        ret

t_sleep:
        push si
        mov ax, 2560h
        mov dx, int60
        int 21h
        mov ah, 86h             ; 100 ms
        mov cx, 1
        mov dx, 86A0h
        int 15h
        mov bx, s_woke
        call puts
        call nl
        pop si
        ret

t_int60:
        mov ax, 2560h
        mov dx, int60
        int 21h
        int 60h
        ret

t_fault:
        push si
        mov ax, 0
        mov bx, 0FFFFh
        mov ax, [bx]            ; #GP: a word at offset 0FFFFh (2 bytes: 8B 07)
        push ax
        mov bx, s_fault
        call puts
        pop ax
        call hex16
        call nl
        pop si
        ret

t_own_fault:
        push si
        mov ax, 250Dh
        mov dx, own0d
        int 21h
        call t_fault
        pop si
        ret

; ---- handlers ----------------------------------------------------------

int13:                          ; a "BIOS" disk call that takes 2 s
        push ax
        push cx
        push dx
        mov ah, 86h
        mov cx, 1Eh             ; 2,000,000 us
        mov dx, 8480h
        int 15h
        pop dx
        pop cx
        pop ax
        iret

int60:
        push ax
        push bx
        mov bx, s_isr
        call puts
        call nl
        pop bx
        pop ax
        iret

own0d:                          ; skip the faulting 2-byte instruction
        push bp
        mov bp, sp
        add word [bp+2], 2
        pop bp
        mov ax, 0AAAAh
        iret

; ---- output through INT 10h AH=0Eh -------------------------------------

putc:
        push ax
        push bx
        mov ah, 0Eh
        int 10h
        pop bx
        pop ax
        ret

puts:                           ; the zero-terminated string at BX
        push ax
.more:  mov al, [bx]
        or al, al
        jz .end
        call putc
        inc bx
        jmp .more
.end:   pop ax
        ret

hex16:                          ; AX as four hex digits
        push cx
        push ax
        mov cx, 4
.digit: rol ax, 4
        push ax
        and al, 0Fh
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 7
.put:   call putc
        pop ax
        loop .digit
        pop ax
        pop cx
        ret

nl:
        push ax
        mov al, 0Ah
        call putc
        pop ax
        ret

s_int21 db "int21 ax=", 0
s_far   db "far ax=", 0
s_bx    db " bx=", 0
s_sp    db " sp=", 0
s_int   db "int ax=", 0
s_back  db "back from int13 at ", 0
s_woke  db "woke", 0
s_isr   db "isr60", 0
s_fault db "fault ax=", 0

cb      dw 0, 0
sp0     dw 0
r_ax    dw 0
r_bx    dw 0
r_sp    dw 0
